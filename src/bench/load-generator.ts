/**
 * The load one worker thread generates: `loops` closed loops, each with one operation in flight,
 * recording latency (HdrHistogram, microseconds), errors by gRPC status and completions per
 * second. Independent of worker_threads (worker.ts wires it to the parent), so it can also run
 * in-process.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createDriver, errorCodeName, errorMessage, type Driver } from './driver.js';
import { createLatencyHistogram, encodeHistogram, recordLatencyUs, type Histogram } from './histogram.js';
import { createKeyChooser, keyName, keyWidth, type KeyChooser } from './key-chooser.js';
import type { RunCommand, WorkerInit, WorkerOpResult, WorkerResult, WorkerToMain } from './messages.js';
import { Rng } from '../common/rng.js';
import { OpChooser, opNames, type OpName } from './workload.js';

const microsPerMilli = 1000;
const millisPerSecond = 1000;

interface OpStats {
  count: number;
  errors: Record<string, number>;
  histogram: Histogram;
}

/** Epoch milliseconds with sub-millisecond resolution, comparable across threads. */
export function epochNowMs(): number {
  return performance.timeOrigin + performance.now();
}

function sleepUntil(epochMs: number): Promise<void> {
  const delayMs = epochMs - epochNowMs();
  return delayMs <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, delayMs));
}

function bump(series: number[], index: number, amount: number): void {
  while (series.length <= index) series.push(0);
  series[index]! += amount;
}

export class LoadGenerator {
  private readonly driver: Driver;
  private readonly keys: KeyChooser;
  private readonly ops: OpChooser;
  private readonly rng: Rng;
  private readonly value: Buffer;
  private readonly width: number;
  private readonly tickets: Int32Array;
  private readonly controllers: AbortController[];
  private readonly stats = new Map<OpName, OpStats>();
  private readonly seriesOps = new Map<OpName, number[]>();
  private readonly seriesErrors: number[] = [];
  private readonly seriesLatencySumUs: number[] = [];
  private stopRequested = false;
  private phase: 'preload' | 'warmup' | 'run' = 'preload';
  private progressOps = 0;
  private progressErrors = 0;
  private measureAtMs = Number.POSITIVE_INFINITY;
  private lastCompletionAtMs = 0;
  private firstError: string | undefined;
  private progressTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly init: WorkerInit,
    private readonly post: (message: WorkerToMain) => void,
  ) {
    this.driver = createDriver(init.client, {
      endpoints: init.endpoints,
      channelEndpoints: init.channelEndpoints,
      consistency: init.consistency,
      timeoutMs: init.timeoutMs,
      token: init.token,
      tlsCa: init.tlsCa,
    });
    this.rng = new Rng(init.seed);
    this.keys = createKeyChooser({
      distribution: init.distribution,
      keys: init.keys,
      zipfSkew: init.zipfSkew,
      seed: this.rng.nextUint32(),
      scatterSeed: init.scatterSeed,
      ...(init.zetan === undefined ? {} : { zetan: init.zetan }),
    });
    this.ops = new OpChooser(init.mix);
    this.value = randomBytes(init.valueBytes);
    this.width = keyWidth(init.keys);
    this.tickets = new Int32Array(init.tickets);
    this.controllers = Array.from({ length: Math.max(init.loops, init.preloadLoops) }, () => new AbortController());
    for (const op of opNames) {
      if (init.mix[op] > 0) {
        this.stats.set(op, { count: 0, errors: {}, histogram: createLatencyHistogram() });
        this.seriesOps.set(op, []);
      }
    }
  }

  connect(): Promise<void> {
    return this.driver.connect();
  }

  /** Stop issuing operations; those in flight finish. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Stop and cancel the operations in flight. */
  abort(): void {
    this.stopRequested = true;
    for (const controller of this.controllers) controller.abort();
  }

  close(): void {
    this.stopProgress();
    this.driver.close();
  }

  private key(index: number): Buffer {
    return Buffer.from(keyName(this.init.keyPrefix, index, this.width), 'utf8');
  }

  private startProgress(): void {
    this.stopProgress();
    this.progressTimer = setInterval(() => this.postProgress(), this.init.progressIntervalMs);
  }

  private stopProgress(): void {
    if (this.progressTimer !== undefined) clearInterval(this.progressTimer);
    this.progressTimer = undefined;
  }

  private postProgress(): void {
    this.post({ type: 'progress', phase: this.phase, ops: this.progressOps, errors: this.progressErrors });
  }

  /** Writes keys [preloadStart, preloadEnd) once with preloadLoops loops; stops after preloadErrorsMax errors. */
  async preload(): Promise<{ written: number; errors: number; firstError: string | undefined }> {
    this.phase = 'preload';
    this.progressOps = 0;
    this.progressErrors = 0;
    let cursor = this.init.preloadStart;
    const channels = this.init.channelEndpoints.length;
    const loop = async (index: number): Promise<void> => {
      const slot = index % channels;
      const signal = this.controllers[index]!.signal;
      while (cursor < this.init.preloadEnd && !this.stopRequested && this.progressErrors < this.init.preloadErrorsMax) {
        const key = this.key(cursor++);
        try {
          await this.driver.exec('put', slot, key, this.value, signal);
          this.progressOps += 1;
        } catch (error) {
          this.progressErrors += 1;
          this.firstError ??= errorMessage(error);
        }
      }
    };
    this.startProgress();
    try {
      await Promise.all(Array.from({ length: this.init.preloadLoops }, (_, index) => loop(index)));
    } finally {
      this.stopProgress();
    }
    return { written: this.progressOps, errors: this.progressErrors, firstError: this.firstError };
  }

  /** Runs the workload: warmup until measureAtMs, measured until endAtMs or the --ops limit. */
  async run(command: RunCommand): Promise<WorkerResult> {
    this.firstError = undefined;
    this.measureAtMs = command.measureAtMs;
    this.phase = command.measureAtMs > command.startAtMs ? 'warmup' : 'run';
    this.progressOps = 0;
    this.progressErrors = 0;
    await sleepUntil(command.startAtMs);
    this.startProgress();
    try {
      await Promise.all(Array.from({ length: this.init.loops }, (_, index) => this.loop(index, command)));
    } finally {
      this.stopProgress();
    }
    this.postProgress();
    return this.result();
  }

  private async loop(index: number, command: RunCommand): Promise<void> {
    const slot = index % this.init.channelEndpoints.length;
    const signal = this.controllers[index]!.signal;
    const { opsLimit } = this.init;
    const origin = performance.timeOrigin;
    for (;;) {
      if (this.stopRequested) return;
      const startedAt = performance.now();
      const startedAtMs = origin + startedAt;
      if (startedAtMs >= command.endAtMs) return;
      const measuring = startedAtMs >= command.measureAtMs;
      if (measuring) {
        if (this.phase === 'warmup') {
          this.phase = 'run';
          this.progressOps = 0;
          this.progressErrors = 0;
        }
        if (opsLimit !== undefined && Atomics.add(this.tickets, 0, 1) >= opsLimit) return;
      }
      const op = this.ops.next(this.rng);
      const key = this.key(this.keys.next());
      let code: string | undefined;
      try {
        await this.driver.exec(op, slot, key, this.value, signal);
      } catch (error) {
        code = errorCodeName(error);
        this.firstError ??= errorMessage(error);
      }
      const endedAt = performance.now();
      if (measuring) {
        this.record(op, (endedAt - startedAt) * microsPerMilli, code, origin + endedAt);
      } else if (code === undefined) {
        this.progressOps += 1;
      } else {
        this.progressErrors += 1;
      }
    }
  }

  private record(op: OpName, micros: number, code: string | undefined, completedAtMs: number): void {
    const stats = this.stats.get(op)!;
    const second = Math.max(0, Math.floor((completedAtMs - this.measureAtMs) / millisPerSecond));
    if (completedAtMs > this.lastCompletionAtMs) this.lastCompletionAtMs = completedAtMs;
    if (code === undefined) {
      this.progressOps += 1;
      stats.count += 1;
      recordLatencyUs(stats.histogram, micros);
      bump(this.seriesOps.get(op)!, second, 1);
      bump(this.seriesLatencySumUs, second, micros);
    } else {
      stats.errors[code] = (stats.errors[code] ?? 0) + 1;
      this.progressErrors += 1;
      bump(this.seriesErrors, second, 1);
    }
  }

  private result(): WorkerResult {
    const ops: Partial<Record<OpName, WorkerOpResult>> = {};
    const seriesOps: Partial<Record<OpName, number[]>> = {};
    for (const [op, stats] of this.stats) {
      ops[op] = { count: stats.count, errors: stats.errors, histogram: encodeHistogram(stats.histogram) };
      seriesOps[op] = this.seriesOps.get(op)!;
    }
    return {
      index: this.init.index,
      ops,
      seriesOps,
      seriesErrors: this.seriesErrors,
      seriesLatencySumUs: this.seriesLatencySumUs,
      lastCompletionAtMs: this.lastCompletionAtMs,
      firstError: this.firstError,
    };
  }
}
