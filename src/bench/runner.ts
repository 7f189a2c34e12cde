/**
 * Runs one benchmark: (optionally) a throwaway local cluster, worker threads that generate the
 * load, preload, warmup, the measured phase with a live progress line, CPU accounting of the
 * load generator and the servers, and the report.
 *
 * @example
 * ```ts
 * const report = await runBenchmark(resolveBenchOptions({ workload: 'get', localCluster: 3 }), { progress: process.stderr });
 * process.stdout.write(formatReport(report));
 * ```
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { startBenchCluster, type BenchCluster } from './bench-cluster.js';
import { deviceOfPath, diskWritesBetween, snapshotDisk, type DiskSnapshot } from './disk-io.js';
import { zeta } from './key-chooser.js';
import { epochNowMs } from './load-generator.js';
import type { MainToWorker, WorkerInit, WorkerResult, WorkerToMain } from './messages.js';
import { type BenchOptions, isRawUnaryClient } from './options.js';
import { planWorkers, share } from './plan.js';
import { clockTicksPerSecond, snapshotCpu } from './proc-cpu.js';
import { formatCount, formatProgress, formatSeconds, ProgressBar, RateMeter, type ProgressOutput } from './progress-bar.js';
import {
  buildOpReports,
  buildTimeSeries,
  coresUsed,
  machineInfo,
  microsPerOp,
  rate,
  reportSchema,
  secondsToMicros,
  type BenchReport,
  type ClientCpu,
  type EndReason,
  type ServerCpu,
} from './report.js';
import { deriveSeed } from '../common/rng.js';
import { opMixOf } from './workload.js';

/** How often the progress line is redrawn (a terminal) and the workers report their counts. */
export const progressIntervalMs = 250;
/** Lead time between sending `run` and the common start instant, so every thread starts together. */
const startDelayMs = 100;
/** Beyond the per-call deadline, how long in-flight calls may take after the end before abort. */
const drainGraceMs = 2000;
/** After an abort, how long workers get to send their results before the run fails. */
const abortGraceMs = 5000;
/** Preload gives up after this many errors per thread, or 1% of its keys if more. */
const preloadErrorsMin = 100;
const preloadErrorShare = 0.01;
/**
 * Concurrent writes of the preload (at least; more if --concurrency is higher): a node commits
 * concurrent writes in shared transactions, so preload runs several times faster than at 16.
 */
export const preloadConcurrencyMin = 128;
/** A worker's event loop busier than this is probably the bottleneck of the run. */
const workerBusyWarnUtilization = 0.9;
const millisPerSecond = 1000;

/** The run failed (cannot connect, preload failed, a worker died). */
export class BenchError extends Error {
  override readonly name = 'BenchError';
  constructor(
    message: string,
    /** True when no endpoint could be connected to. */
    readonly unreachable = false,
  ) {
    super(message);
  }
}

export interface RunHooks {
  /** Where the progress line goes (stderr). */
  progress: ProgressOutput;
  /** Status lines (starting the cluster, phases); default: written to `progress`. */
  log?: (line: string) => void;
  /** Aborting it ends the run early (Ctrl-C): the report covers what was measured. */
  signal?: AbortSignal;
}

/** Target of a run, once the endpoints are known. */
interface Target {
  kind: 'local-cluster' | 'endpoints';
  endpoints: string[];
  serverPids: number[];
  serverLabels: string[];
  replicationFactor: number | null;
  /** Where the servers keep their data (its block device's writes are measured); null if unknown. */
  dataDir: string | null;
  /** Bearer token every call sends (nodes with auth), if any. */
  token: string | undefined;
  /** PEM of the CA of nodes with TLS (clients talk TLS, trusting it); undefined: plaintext. */
  tlsCa: string | undefined;
}

type MessageOf<T extends WorkerToMain['type']> = Extract<WorkerToMain, { type: T }>;

/** One worker thread and the messages it sent. */
class WorkerHandle {
  readonly worker: Worker;
  progress = { phase: 'preload', ops: 0, errors: 0 };
  private readonly pending = new Map<string, { resolve: (message: WorkerToMain) => void; reject: (error: Error) => void }>();
  private readonly arrived = new Map<string, WorkerToMain>();
  private failure: Error | undefined;
  private finished = false;

  constructor(init: WorkerInit) {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
    this.worker.on('message', (message: WorkerToMain) => {
      if (message.type === 'progress') {
        this.progress = { phase: message.phase, ops: message.ops, errors: message.errors };
      } else if (message.type === 'failed') {
        this.fail(new BenchError(`worker ${init.index}: ${message.message}`, message.unreachable));
      } else {
        if (message.type === 'result') this.finished = true;
        const waiter = this.pending.get(message.type);
        if (waiter === undefined) this.arrived.set(message.type, message);
        else {
          this.pending.delete(message.type);
          waiter.resolve(message);
        }
      }
    });
    this.worker.on('error', (error) => this.fail(new BenchError(`worker ${init.index} crashed: ${error.message}`)));
    this.worker.on('exit', (code) => {
      if (!this.finished) this.fail(new BenchError(`worker ${init.index} exited (code ${code}) before finishing`));
    });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  send(message: MainToWorker): void {
    this.worker.postMessage(message);
  }

  next<T extends WorkerToMain['type']>(type: T): Promise<MessageOf<T>> {
    const early = this.arrived.get(type);
    if (early !== undefined) {
      this.arrived.delete(type);
      return Promise.resolve(early as MessageOf<T>);
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.set(type, { resolve: resolve as (message: WorkerToMain) => void, reject });
    });
  }

  eventLoopUtilization(since?: EventLoopUtilization): EventLoopUtilization {
    return since === undefined ? this.worker.performance.eventLoopUtilization() : this.worker.performance.eventLoopUtilization(since);
  }

  async terminate(): Promise<void> {
    this.finished = true;
    await this.worker.terminate();
  }
}

/** The target of a run on a cluster started by the caller (the suite), which stays up. */
function clusterTarget(cluster: BenchCluster): Target {
  return {
    kind: 'local-cluster',
    endpoints: cluster.endpoints,
    serverPids: cluster.pids,
    serverLabels: cluster.nodeIds,
    replicationFactor: cluster.replicationFactor,
    dataDir: cluster.dir,
    token: cluster.token,
    tlsCa: cluster.tlsCa,
  };
}

/**
 * Runs the benchmark described by `options` and answers its report. With `options.localCluster`
 * it starts a throwaway cluster and stops it at the end; with `existingCluster` (the suite's) it
 * uses that one and leaves it running; otherwise it loads `options.endpoints`.
 */
export async function runBenchmark(options: BenchOptions, hooks: RunHooks, existingCluster?: BenchCluster): Promise<BenchReport> {
  const log = hooks.log ?? ((line: string) => void hooks.progress.write(`${line}\n`));
  if (existingCluster !== undefined) return runAgainst(options, clusterTarget(existingCluster), hooks, log);
  let cluster: BenchCluster | undefined;
  try {
    let target: Target;
    if (options.localCluster !== undefined) {
      log(`starting a local cluster of ${options.localCluster} node${options.localCluster === 1 ? '' : 's'}...`);
      cluster = await startBenchCluster(options.localCluster, options.replicationFactor, options.auth, options.tls, options.serverCpuProfileDir);
      log(`local cluster up: ${cluster.endpoints.join(', ')} (data in ${cluster.dir}, replication factor ${cluster.replicationFactor})`);
      target = clusterTarget(cluster);
    } else {
      target = {
        kind: 'endpoints',
        endpoints: options.endpoints,
        serverPids: options.serverPids,
        serverLabels: options.serverPids.map((pid) => `pid ${pid}`),
        replicationFactor: null,
        dataDir: null,
        token: options.token,
        tlsCa: undefined,
      };
    }
    return await runAgainst(options, target, hooks, log);
  } finally {
    if (cluster !== undefined) {
      log('stopping the local cluster...');
      await cluster.stop();
    }
  }
}

async function runAgainst(options: BenchOptions, target: Target, hooks: RunHooks, log: (line: string) => void): Promise<BenchReport> {
  const createdAt = new Date().toISOString();
  const mix = opMixOf(options.workload, options.readRatio, options.deleteRatio);
  const plans = planWorkers({ ...options, endpoints: target.endpoints });
  const zetan = options.distribution === 'zipfian' ? zeta(options.keys, options.zipfSkew) : undefined;
  const tickets = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  const bar = new ProgressBar(hooks.progress);
  const notes: string[] = [];
  if (options.tls) notes.push('the nodes ran with TLS on the public port and mutual TLS between them; the load generator talked TLS');
  if (options.serverCpuProfileDir !== undefined) notes.push(`the nodes ran with node --cpu-prof (profiles in ${options.serverCpuProfileDir}): the profiler's cost is in these figures`);
  if (options.auth) notes.push('the nodes ran with auth: every call carried a bearer token and was checked against the users file');

  const workers = plans.map(
    (plan) =>
      new WorkerHandle({
        index: plan.index,
        client: options.client,
        endpoints: target.endpoints,
        channelEndpoints: plan.channelEndpoints,
        loops: plan.loops,
        consistency: options.consistency,
        timeoutMs: options.timeoutMs,
        token: target.token,
        tlsCa: target.tlsCa,
        mix,
        distribution: options.distribution,
        zipfSkew: options.zipfSkew,
        zetan,
        keys: options.keys,
        keyPrefix: options.keyPrefix,
        valueBytes: options.valueBytes,
        seed: deriveSeed(options.seed, plan.index),
        scatterSeed: options.seed,
        preloadLoops: share(Math.max(options.concurrency, preloadConcurrencyMin), options.threads, plan.index),
        preloadStart: plan.preloadStart,
        preloadEnd: plan.preloadEnd,
        preloadErrorsMax: Math.max(preloadErrorsMin, Math.ceil((plan.preloadEnd - plan.preloadStart) * preloadErrorShare)),
        opsLimit: options.ops,
        tickets,
        progressIntervalMs,
      }),
  );
  const broadcast = (message: MainToWorker): void => workers.forEach((worker) => worker.send(message));
  let interrupted = false;
  let interruptedAtMs = 0;
  const onAbort = (): void => {
    if (interrupted) return;
    interrupted = true;
    interruptedAtMs = epochNowMs();
    broadcast({ type: 'stop' });
  };
  hooks.signal?.addEventListener('abort', onAbort, { once: true });
  if (hooks.signal?.aborted === true) onAbort();

  try {
    log(
      `${options.workload}: ${options.concurrency} concurrent operation${options.concurrency === 1 ? '' : 's'}, ${options.threads} thread${options.threads === 1 ? '' : 's'}, ` +
        `${options.connections} connection${options.connections === 1 ? '' : 's'} to ${target.endpoints.join(', ')} (${options.client} client, seed ${options.seed})`,
    );
    await Promise.all(workers.map((worker) => worker.next('ready')));

    const preload = options.preload ? await runPreload(options, workers, bar, broadcast, () => interrupted) : null;
    if (interrupted) throw new BenchError('interrupted before the measured phase');

    // --- measured run ---
    const startAtMs = epochNowMs() + startDelayMs;
    const measureAtMs = startAtMs + options.warmupSeconds * millisPerSecond;
    const endAtMs = measureAtMs + options.durationSeconds * millisPerSecond;
    broadcast({ type: 'run', startAtMs, measureAtMs, endAtMs });

    const dataDevice = target.dataDir === null ? undefined : deviceOfPath(target.dataDir);
    let cpuStart:
      | { client: NodeJS.CpuUsage; servers: (number | undefined)[]; disk: DiskSnapshot | undefined; main: EventLoopUtilization; workers: EventLoopUtilization[]; atMs: number }
      | undefined;
    const takeCpuStart = (): void => {
      cpuStart ??= {
        client: process.cpuUsage(),
        servers: snapshotCpu(target.serverPids),
        disk: snapshotDisk(dataDevice),
        main: performance.eventLoopUtilization(),
        workers: workers.map((worker) => worker.eventLoopUtilization()),
        atMs: epochNowMs(),
      };
    };
    const cpuTimer = setTimeout(takeCpuStart, Math.max(0, measureAtMs - epochNowMs()));

    const meter = new RateMeter(bar.isTTY ? millisPerSecond : 2 * millisPerSecond);
    let lastPhase = '';
    const draw = (): void => {
      const now = epochNowMs();
      const phase = now < measureAtMs ? 'warmup' : 'run';
      const ops = workers.reduce((total, worker) => total + (worker.progress.phase === phase ? worker.progress.ops : 0), 0);
      const errors = workers.reduce((total, worker) => total + (worker.progress.phase === phase ? worker.progress.errors : 0), 0);
      if (phase !== lastPhase) {
        meter.reset();
        lastPhase = phase;
      }
      meter.add(now, ops);
      const elapsed = phase === 'warmup' ? (now - startAtMs) / millisPerSecond : (now - measureAtMs) / millisPerSecond;
      const total = phase === 'warmup' ? options.warmupSeconds : options.durationSeconds;
      const opsFraction = options.ops === undefined ? undefined : Math.min(1, Atomics.load(new Int32Array(tickets), 0) / options.ops);
      const fraction = phase === 'run' && opsFraction !== undefined ? opsFraction : Math.min(1, elapsed / total);
      bar.update(
        formatProgress({
          phase,
          fraction,
          elapsedSeconds: elapsed,
          remainingSeconds: phase === 'run' && options.ops !== undefined ? undefined : Math.max(0, total - elapsed),
          opsPerSecond: meter.rate(),
          ops,
          errors,
          ...(phase === 'run' && options.ops !== undefined ? { detail: `(of ${formatCount(options.ops)})` } : {}),
        }),
      );
    };
    const drawTimer = setInterval(draw, progressIntervalMs);

    // Bounded: past the end plus the call deadline, cancel what is in flight; then give up.
    const abortTimer = setTimeout(() => broadcast({ type: 'abort' }), endAtMs - epochNowMs() + options.timeoutMs + drainGraceMs);
    let giveUpTimer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<never>((_, reject) => {
      giveUpTimer = setTimeout(
        () => reject(new BenchError('workers did not finish after being aborted')),
        endAtMs - epochNowMs() + options.timeoutMs + drainGraceMs + abortGraceMs,
      );
    });
    let results: WorkerResult[];
    try {
      results = (await Promise.race([Promise.all(workers.map((worker) => worker.next('result'))), giveUp])).map((message) => message.result);
    } finally {
      clearTimeout(cpuTimer);
      clearInterval(drawTimer);
      clearTimeout(abortTimer);
      clearTimeout(giveUpTimer);
    }
    const endedAtMs = epochNowMs();
    const clientEnd = process.cpuUsage();
    const serversEnd = snapshotCpu(target.serverPids);
    const diskEnd = snapshotDisk(dataDevice);
    if (cpuStart === undefined) {
      // Interrupted during warmup: nothing was measured.
      bar.done();
      throw new BenchError('interrupted before the measured phase');
    }
    const mainElu = performance.eventLoopUtilization(cpuStart.main);
    const workerElu = workers.map((worker, i) => worker.eventLoopUtilization(cpuStart!.workers[i]));
    draw();
    bar.done();

    // --- figures ---
    const ticketsTaken = Atomics.load(new Int32Array(tickets), 0);
    let endedBy: EndReason;
    let seconds: number;
    const lastCompletionAtMs = Math.max(0, ...results.map((result) => result.lastCompletionAtMs));
    if (interrupted && interruptedAtMs < endAtMs) {
      endedBy = 'interrupted';
      seconds = Math.max(0, (interruptedAtMs - measureAtMs) / millisPerSecond);
    } else if (options.ops !== undefined && ticketsTaken >= options.ops) {
      endedBy = 'ops';
      seconds = Math.max(0, (lastCompletionAtMs - measureAtMs) / millisPerSecond);
    } else {
      endedBy = options.ops === undefined ? 'duration' : 'time-limit';
      seconds = options.durationSeconds;
    }
    const { operations, total } = buildOpReports(results, seconds);
    const timeSeries = buildTimeSeries(results, seconds);
    const measuredOps = total.count + total.errors;

    const cpuWallMicros = (endedAtMs - cpuStart.atMs) * millisPerSecond;
    const clientUser = clientEnd.user - cpuStart.client.user;
    const clientSystem = clientEnd.system - cpuStart.client.system;
    const client: ClientCpu = {
      method: 'process.cpuUsage() of the kvctl process (main thread + worker threads + libuv/GC threads) over the measured phase and its in-flight tail',
      userMicros: clientUser,
      systemMicros: clientSystem,
      totalMicros: clientUser + clientSystem,
      wallMicros: cpuWallMicros,
      cores: coresUsed(clientUser + clientSystem, cpuWallMicros),
      microsPerOp: microsPerOp(clientUser + clientSystem, measuredOps),
      mainEventLoopUtilization: mainElu.utilization,
      workerEventLoopUtilization: workerElu.map((elu) => elu.utilization),
    };
    let server: ServerCpu | null = null;
    if (target.serverPids.length > 0) {
      const nodes = target.serverPids.map((pid, i) => {
        const before = cpuStart!.servers[i];
        const after = serversEnd[i];
        return { pid, label: target.serverLabels[i] ?? `pid ${pid}`, cpuMicros: before === undefined || after === undefined ? null : after - before };
      });
      const serverTotal = nodes.reduce((acc, node) => acc + (node.cpuMicros ?? 0), 0);
      server = {
        method: '/proc/<pid>/stat utime+stime (all threads of each server process) before and after the measured phase, summed over the nodes',
        clockTicksPerSecond: clockTicksPerSecond(),
        nodes,
        totalMicros: serverTotal,
        wallMicros: cpuWallMicros,
        cores: coresUsed(serverTotal, cpuWallMicros),
        microsPerOp: microsPerOp(serverTotal, measuredOps),
      };
      const unreadable = nodes.filter((node) => node.cpuMicros === null);
      if (unreadable.length > 0) notes.push(`server CPU unavailable for ${unreadable.map((node) => node.label).join(', ')} (no /proc/<pid>/stat: not Linux, or not our user's process?)`);
    }
    const disk = target.dataDir === null ? null : diskWritesBetween(target.dataDir, cpuStart.disk, diskEnd, measuredOps, cpuWallMicros);
    if (target.dataDir !== null && disk === null) {
      notes.push(
        dataDevice === undefined
          ? `disk writes unavailable: cannot tell the block device of ${target.dataDir} (tmpfs, overlayfs, btrfs?)`
          : cpuStart.disk === undefined || diskEnd === undefined
            ? `disk writes unavailable: no line for device ${dataDevice.major}:${dataDevice.minor} in /proc/diskstats (not Linux?)`
            : `disk writes unavailable: the counters of device ${dataDevice.major}:${dataDevice.minor} went backwards`,
      );
    }

    workerElu.forEach((elu, i) => {
      if (elu.utilization > workerBusyWarnUtilization) {
        notes.push(`worker thread ${i} was busy ${(elu.utilization * 100).toFixed(0)}% of the time: the load generator may be the bottleneck (raise --threads)`);
      }
    });
    if (target.kind === 'local-cluster') {
      notes.push(`the servers and the load generator share this machine's ${machineInfo().availableParallelism} CPUs`);
    }
    if (isRawUnaryClient(options.client) && options.connections > options.concurrency) {
      notes.push(`only ${options.concurrency} of the ${options.connections} connections carry traffic (one loop per connection at most)`);
    }
    if (endedBy === 'time-limit') notes.push(`--ops ${options.ops} not reached within the ${options.durationSeconds} s time limit`);
    if (endedBy === 'interrupted') notes.push('interrupted: the figures cover the measured time before the interruption');
    if (total.count === 0) notes.push('no operation succeeded');

    return {
      schema: reportSchema,
      createdAt,
      // The token is a password: the report says only whether one was sent.
      options: { ...options, token: options.token === undefined ? undefined : '(redacted)' },
      mix,
      target: {
        kind: target.kind,
        endpoints: target.endpoints,
        nodes: target.endpoints.length,
        replicationFactor: target.replicationFactor,
        serverPids: target.serverPids,
      },
      machine: machineInfo(),
      preload,
      measured: { seconds, ops: total.count, errors: total.errors, opsPerSecond: rate(total.count, seconds), endedBy, warmupSeconds: options.warmupSeconds },
      operations,
      total,
      timeSeries,
      cpu: { client, server },
      disk,
      firstError: results.map((result) => result.firstError).find((message) => message !== undefined) ?? null,
      notes,
    };
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort);
    bar.done();
    await Promise.all(workers.map((worker) => worker.terminate().catch(() => undefined)));
  }
}

async function runPreload(
  options: BenchOptions,
  workers: WorkerHandle[],
  bar: ProgressBar,
  broadcast: (message: MainToWorker) => void,
  isInterrupted: () => boolean,
): Promise<NonNullable<BenchReport['preload']>> {
  const startedAtMs = epochNowMs();
  const meter = new RateMeter(bar.isTTY ? millisPerSecond : 2 * millisPerSecond);
  broadcast({ type: 'preload' });
  const draw = (): void => {
    const now = epochNowMs();
    const written = workers.reduce((total, worker) => total + (worker.progress.phase === 'preload' ? worker.progress.ops : 0), 0);
    const errors = workers.reduce((total, worker) => total + (worker.progress.phase === 'preload' ? worker.progress.errors : 0), 0);
    meter.add(now, written);
    const keysPerSecond = meter.rate();
    const left = options.keys - written;
    bar.update(
      formatProgress({
        phase: 'preload',
        fraction: written / options.keys,
        elapsedSeconds: (now - startedAtMs) / millisPerSecond,
        remainingSeconds: keysPerSecond > 0 ? left / keysPerSecond : undefined,
        opsPerSecond: keysPerSecond,
        ops: written,
        errors,
        detail: `of ${formatCount(options.keys)} keys`,
      }),
    );
  };
  const timer = setInterval(draw, progressIntervalMs);
  let outcomes;
  try {
    outcomes = await Promise.all(workers.map((worker) => worker.next('preloaded')));
  } finally {
    clearInterval(timer);
  }
  draw();
  bar.done();
  const seconds = (epochNowMs() - startedAtMs) / millisPerSecond;
  const written = outcomes.reduce((total, outcome) => total + outcome.written, 0);
  const errors = outcomes.reduce((total, outcome) => total + outcome.errors, 0);
  if (!isInterrupted() && written + errors < options.keys) {
    const first = outcomes.find((outcome) => outcome.firstError !== undefined)?.firstError ?? 'unknown error';
    throw new BenchError(`preload failed: ${formatCount(errors)} errors after ${formatCount(written)} of ${formatCount(options.keys)} keys; first: ${first}`);
  }
  if (errors > 0) {
    const first = outcomes.find((outcome) => outcome.firstError !== undefined)?.firstError ?? '';
    bar.done(`preload: ${formatCount(errors)} of ${formatCount(options.keys)} writes failed (first: ${first}); continuing`);
  }
  bar.done(`preload: ${formatCount(written)} keys in ${formatSeconds(seconds)} (${formatCount(rate(written, seconds))} keys/s)`);
  return { keys: options.keys, written, errors, seconds, keysPerSecond: rate(written, seconds) };
}
