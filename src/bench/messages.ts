/**
 * The protocol between the runner (main thread) and its load-generating worker threads.
 *
 * main -> worker: workerData ({@link WorkerInit}), then `preload` (optional), `run`, and `stop`
 * (stop issuing operations) / `abort` (also cancel those in flight) if the run is cut short.
 * worker -> main: `ready` once its channels are connected, `progress` several times a second,
 * `preloaded`, `result` at the end, or `failed`.
 */
import type { ConsistencyLevel } from '../client/index.js';
import type { Distribution } from './key-chooser.js';
import type { ClientKind } from './options.js';
import type { OpMix, OpName } from './workload.js';

export interface WorkerInit {
  index: number;
  client: ClientKind;
  /** Every endpoint of the run (the SDK fails over between them). */
  endpoints: string[];
  /** This thread's channels, by endpoint. */
  channelEndpoints: string[];
  loops: number;
  consistency: ConsistencyLevel | undefined;
  timeoutMs: number;
  /** Bearer token every call sends (nodes with auth), if any. */
  token: string | undefined;
  /** PEM of the nodes' CA: talk TLS, trusting it; undefined: plaintext. */
  tlsCa: string | undefined;
  mix: OpMix;
  distribution: Distribution;
  zipfSkew: number;
  /** zeta(keys, zipfSkew), computed once by the main thread (zipfian only). */
  zetan: number | undefined;
  keys: number;
  keyPrefix: string;
  valueBytes: number;
  /** This thread's draws. */
  seed: number;
  /** The run's seed for the zipfian scatter permutation (the same in every thread). */
  scatterSeed: number;
  /** Concurrent writes of this thread during preload. */
  preloadLoops: number;
  preloadStart: number;
  preloadEnd: number;
  /** Most preload errors of this thread before it gives up. */
  preloadErrorsMax: number;
  /** Measured-operation limit shared by all threads (--ops), or undefined. */
  opsLimit: number | undefined;
  /** Int32Array[1] over it: tickets taken so far (--ops). */
  tickets: SharedArrayBuffer;
  progressIntervalMs: number;
}

/** Times as epoch milliseconds (performance.timeOrigin + performance.now() in every thread). */
export interface RunCommand {
  type: 'run';
  startAtMs: number;
  measureAtMs: number;
  endAtMs: number;
}

export type MainToWorker = { type: 'preload' } | RunCommand | { type: 'stop' } | { type: 'abort' };

/** Per operation type, as counted by one worker. */
export interface WorkerOpResult {
  count: number;
  /** Errors by gRPC status code name. */
  errors: Record<string, number>;
  /** Latency of the successful operations, HdrHistogram compressed base64, microseconds. */
  histogram: string;
}

export interface WorkerResult {
  index: number;
  ops: Partial<Record<OpName, WorkerOpResult>>;
  /** Completions per second of the measured phase (index = second), per operation type. */
  seriesOps: Partial<Record<OpName, number[]>>;
  seriesErrors: number[];
  /** Sum of the successful latencies completed in each second, microseconds. */
  seriesLatencySumUs: number[];
  /** Epoch ms of the last measured completion (0 if none). */
  lastCompletionAtMs: number;
  /** First error message seen, for the report. */
  firstError: string | undefined;
}

export type WorkerToMain =
  | { type: 'ready' }
  | { type: 'failed'; message: string; unreachable: boolean }
  | { type: 'progress'; phase: 'preload' | 'warmup' | 'run'; ops: number; errors: number }
  | { type: 'preloaded'; written: number; errors: number; firstError: string | undefined }
  | { type: 'result'; result: WorkerResult };
