import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { HintEntry, HintLog } from '../storage/hint-log.js';
import type { PeerLink } from './peer-link.js';
import type { ReplicateStreamRequest, ReplicateStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { PeerStream } from './peer-stream.js';

export interface DeliverySettings {
  readonly selfId: string;
  readonly batchMaxEntries: number;
  readonly batchMaxBytes: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  readonly peerCallMs: number;
}

/** What a coordinator waiting on one log entry learns. */
export type DeliveryOutcome =
  | { readonly delivered: true; readonly previous: Buffer | undefined }
  | { readonly delivered: false; readonly reason: string };

const noRecord = Buffer.alloc(0);

interface Waiter {
  /** Version header of the newest old record the coordinator knows (the peer answers only a newer one). */
  readonly knownPrevious: Buffer | undefined;
  resolve(outcome: DeliveryOutcome): void;
}

/**
 * Drains one peer's replication-log queue: reads a batch in sequence order, sends it as one
 * message of the internal ReplicateStream (the peer applies it in one durable transaction and
 * answers), deletes
 * it from the log, repeats. Woken at once by new entries; while the peer is down, the same batch
 * is retried with p-retry's exponential, jittered, capped backoff, and a peer seen up again (by
 * the prober or any other call) cuts the wait short.
 *
 * One batch is in flight at a time, so entries reach the peer in log order, and everything
 * written while a batch is in flight goes in the next one: batches grow with load.
 *
 * Coordinators waiting for a write to reach W replicas register a waiter per entry; the loop
 * resolves it when the batch holding the entry is acknowledged, or with a failure as soon as the
 * peer is found unreachable (the entry itself stays in the log and is delivered later).
 */
export class DeliveryLoop {
  private readonly waiters = new Map<number, Waiter>();
  private wakeUp: (() => void) | undefined;
  private pendingWake = false;
  private stopped = false;
  private backoff: AbortController | undefined;
  private running: Promise<void> | undefined;
  /** Batches go as messages of one long-lived stream: a new call per batch cost more than the batch. */
  private readonly stream: PeerStream<ReplicateStreamRequest, ReplicateStreamResponse>;
  /** Highest sequence sent and acknowledged (entries up to it are delivered). */
  private deliveredSeq = 0;
  delivered = 0;

  constructor(
    private readonly link: PeerLink,
    private readonly log: HintLog,
    private readonly settings: DeliverySettings,
    private readonly logger: Logger,
  ) {
    this.stream = new PeerStream((requests, options) => link.client.replicateStream(requests, options), link.id, settings.peerCallMs);
    link.onReachabilityChange((_, reachable) => {
      if (reachable) this.backoff?.abort(new Error('peer reachable again'));
      else this.failWaiters(`${link.id} is unreachable (${link.lastError ?? 'no answer'})`);
    });
  }

  get peerId(): string {
    return this.link.id;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** New entries were committed to this peer's queue. */
  wake(): void {
    this.pendingWake = true;
    const wake = this.wakeUp;
    this.wakeUp = undefined;
    wake?.();
  }

  /**
   * Registers interest in entry `seq`. Call it before the entry's transaction commits (from
   * inside it), so the loop cannot deliver the entry unseen.
   */
  track(seq: number, knownPrevious?: Buffer): Promise<DeliveryOutcome> {
    if (!this.link.reachable) {
      return Promise.resolve({ delivered: false, reason: `${this.link.id} is unreachable (${this.link.lastError ?? 'no answer'})` });
    }
    return new Promise((resolve) => this.waiters.set(seq, { knownPrevious, resolve }));
  }

  /** Forgets a waiter (the coordinator stopped waiting). */
  untrack(seq: number): void {
    this.waiters.delete(seq);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.backoff?.abort(new Error('stopping'));
    this.wake();
    this.failWaiters('node is shutting down');
    // A batch in flight fails now instead of at its timeout; it stays in the log for later.
    this.stream.close();
    await this.running;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.pendingWake = false;
      const batch = this.log.read(this.link.id, this.deliveredSeq, this.settings.batchMaxEntries, this.settings.batchMaxBytes);
      if (batch.length === 0) {
        if (!this.pendingWake) await new Promise<void>((resolve) => (this.wakeUp = resolve));
        continue;
      }
      const previous = await this.deliver(batch);
      if (previous === undefined) continue; // stopped
      this.deliveredSeq = batch[batch.length - 1]!.seq;
      this.delivered += batch.length;
      for (const [i, entry] of batch.entries()) {
        const waiter = this.waiters.get(entry.seq);
        if (waiter === undefined) continue;
        this.waiters.delete(entry.seq);
        waiter.resolve({ delivered: true, previous: previous.get(i) });
      }
      // Deleting delivered entries need not hold up the next batch: a crash before the delete
      // commits only means redelivery, which the LWW merge makes harmless.
      this.log.remove(batch);
    }
  }

  /** Sends `batch` until the peer acknowledges it; the previous records it returned by index. */
  private async deliver(batch: readonly HintEntry[]): Promise<Map<number, Buffer | undefined> | undefined> {
    const wantPrevious = batch.flatMap((e, i) => (this.waiters.has(e.seq) ? [i] : []));
    // Rebuilt for every attempt: entries the log's limits dropped meanwhile must not be sent late
    // (an entry older than the tombstone grace could carry a value whose delete was purged).
    // Dropped entries are always the oldest, so what is left is a suffix of the batch.
    const request = () => {
      let first = 0;
      while (first < batch.length && this.log.isGone(this.link.id, batch[first]!.seq)) first++;
      const wanted = wantPrevious.filter((i) => i >= first);
      return {
        first,
        records: batch.slice(first).map((e) => ({ key: e.key, record: e.record })),
        wantPrevious: wanted.map((i) => i - first),
        knownPrevious: wanted.map((i) => this.waiters.get(batch[i]!.seq)?.knownPrevious ?? noRecord),
      };
    };
    while (!this.stopped) {
      this.backoff = new AbortController();
      try {
        let sent = request();
        const response = await pRetry(
          () => {
            sent = request();
            if (sent.records.length === 0) return Promise.resolve({ previous: [] });
            return this.stream
              .request({ batch: { fromNodeId: this.settings.selfId, records: sent.records, wantPrevious: sent.wantPrevious, knownPrevious: sent.knownPrevious } })
              .then((answer) => answer.ack ?? { previous: [] });
          },
          {
            retries: Number.POSITIVE_INFINITY,
            factor: 2,
            minTimeout: this.settings.retryMinMs,
            maxTimeout: this.settings.retryMaxMs,
            randomize: true,
            signal: this.backoff.signal,
            onFailedAttempt: ({ error, attemptNumber }) => {
              this.link.markFailure(error);
              if (attemptNumber === 1 || attemptNumber % 20 === 0) {
                this.logger.warn({ peer: this.link.id, attempt: attemptNumber, backlog: this.log.stats(this.link.id).entries, err: error.message }, 'replication to peer failed; retrying with backoff');
              }
            },
          },
        );
        this.link.markContact();
        const previous = new Map<number, Buffer | undefined>();
        response.previous.forEach((p, j) => previous.set(sent.first + sent.wantPrevious[j]!, p.record.length > 0 ? p.record : undefined));
        return previous;
      } catch (err) {
        // Backoff cut short (peer seen again) or stopping: retry at once, or leave. Anything else
        // (an error p-retry does not retry) waits the minimum delay, so this never spins.
        if (!this.backoff.signal.aborted) {
          this.link.markFailure(err);
          await new Promise((resolve) => setTimeout(resolve, this.settings.retryMaxMs));
        }
      }
    }
    return undefined;
  }

  private failWaiters(reason: string): void {
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of waiters) w.resolve({ delivered: false, reason });
  }
}
