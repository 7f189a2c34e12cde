/**
 * How the load is laid out: concurrency (closed loops) and connections (gRPC channels) split
 * over worker threads, channels spread over endpoints, and the preload key range of each thread.
 * Pure functions, unit-tested.
 */

/** Channels per endpoint by default: enough HTTP/2 sessions that no single one is a queue. */
export const channelsPerEndpointDefault = 8;

/**
 * Default --connections: one channel per loop, up to 8 per endpoint, and at least one per thread
 * (a channel beyond the concurrency would carry no traffic). E.g. concurrency 1: 1; concurrency
 * 16 on 3 endpoints: 16 (6 + 5 + 5); concurrency 128 on 3 endpoints: 24.
 *
 * A coalescing client (`--client sdk`) gets one channel per endpoint and thread instead: it
 * batches the calls made on one channel, so more channels only make smaller batches (as a user
 * process with one KvClient would).
 */
export function defaultConnections(concurrency: number, endpointCount: number, threads: number, coalescing = false): number {
  const perEndpoint = coalescing ? threads : channelsPerEndpointDefault;
  return Math.max(threads, Math.min(concurrency, perEndpoint * Math.max(1, endpointCount)));
}

/** What one worker thread does. */
export interface WorkerPlan {
  index: number;
  /** Closed loops (concurrent operations) of this thread. */
  loops: number;
  /** The endpoint of each of this thread's channels; loop i uses channel i mod length. */
  channelEndpoints: string[];
  /** Keys [preloadStart, preloadEnd) this thread writes during preload. */
  preloadStart: number;
  preloadEnd: number;
}

/** Share `total` over `parts` as evenly as possible: the first `total % parts` get one more. */
export function share(total: number, parts: number, index: number): number {
  return Math.floor(total / parts) + (index < total % parts ? 1 : 0);
}

/**
 * Lays out the threads. Channels are numbered globally 0..connections-1 and channel g goes to
 * endpoint g mod E; each thread owns a contiguous block of channel numbers, so every thread's
 * channels (and therefore its loops) are spread over the endpoints round-robin.
 */
export function planWorkers(options: { threads: number; concurrency: number; connections: number; endpoints: readonly string[]; keys: number }): WorkerPlan[] {
  const { threads, concurrency, connections, endpoints, keys } = options;
  if (endpoints.length === 0) throw new RangeError('planWorkers: no endpoints');
  if (threads < 1 || threads > concurrency || connections < threads) {
    throw new RangeError(`planWorkers: need 1 <= threads (${threads}) <= concurrency (${concurrency}) and connections (${connections}) >= threads`);
  }
  const plans: WorkerPlan[] = [];
  let channel = 0;
  let key = 0;
  for (let index = 0; index < threads; index++) {
    const channelCount = share(connections, threads, index);
    const channelEndpoints = Array.from({ length: channelCount }, (_, i) => endpoints[(channel + i) % endpoints.length]!);
    channel += channelCount;
    const keyCount = share(keys, threads, index);
    plans.push({ index, loops: share(concurrency, threads, index), channelEndpoints, preloadStart: key, preloadEnd: key + keyCount });
    key += keyCount;
  }
  return plans;
}
