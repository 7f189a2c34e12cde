/**
 * The benchmark report: its shape (what `--out` writes as JSON) and the arithmetic that builds it
 * from the workers' results. Pure functions, unit-tested.
 */
import { availableParallelism, cpus, freemem, hostname, loadavg, platform, release, totalmem, arch } from 'node:os';
import { decodeHistogram, encodeHistogram, mergeHistograms, percentileCurve, summarizeLatency, type CurvePoint, type LatencySummary } from './histogram.js';
import type { DiskWrites } from './disk-io.js';
import type { WorkerOpResult, WorkerResult } from './messages.js';
import type { BenchOptions } from './options.js';
import { opNames, type OpMix, type OpName } from './workload.js';

export const reportSchema = 'kvstore-bench/1';
const microsPerSecond = 1_000_000;

/** Figures of one operation type (or of all of them: op `total`). */
export interface OpReport {
  op: OpName | 'total';
  /** Successful operations. */
  count: number;
  /** Failed operations. */
  errors: number;
  /** Failed operations by gRPC status code name. */
  errorsByCode: Record<string, number>;
  /** Successful operations per second of measured time. */
  opsPerSecond: number;
  /** Latency of the successful operations. */
  latency: LatencySummary;
  /** HDR percentile curve (percentile 0..100, latency ms). */
  percentileCurve: CurvePoint[];
  /** The latency histogram in HdrHistogram's compressed base64 (microseconds). */
  histogram: string;
}

/** One second of the measured phase. */
export interface TimePoint {
  /** Seconds since the measured phase began (the bucket [second, second + 1)). */
  second: number;
  /** Successful operations per second in this bucket. */
  opsPerSecond: number;
  byOp: Partial<Record<OpName, number>>;
  /** Failed operations per second in this bucket. */
  errorsPerSecond: number;
  /** Mean latency of the successful operations completed in this bucket. */
  meanLatencyMs: number;
}

export interface ClientCpu {
  /** What was measured. */
  method: string;
  userMicros: number;
  systemMicros: number;
  totalMicros: number;
  /** Wall time the CPU figures cover (measured phase plus the in-flight tail). */
  wallMicros: number;
  /** totalMicros / wallMicros: 1.0 = one core fully busy. */
  cores: number;
  /** Load-generator CPU per measured operation (successes and errors). */
  microsPerOp: number;
  /** Share of the time the main thread's event loop was busy (0..1). */
  mainEventLoopUtilization: number;
  /** Per worker thread: share of the time its event loop was busy (0..1); near 1 = saturated. */
  workerEventLoopUtilization: number[];
}

export interface ServerCpu {
  method: string;
  clockTicksPerSecond: number;
  nodes: { pid: number; label: string; cpuMicros: number | null }[];
  /** Sum over the nodes that could be read. */
  totalMicros: number;
  wallMicros: number;
  cores: number;
  /** Server CPU (summed over nodes) per measured operation. */
  microsPerOp: number;
}

export interface MachineInfo {
  hostname: string;
  platform: string;
  release: string;
  arch: string;
  cpuModel: string;
  cpuCount: number;
  availableParallelism: number;
  cpuSpeedMhz: number;
  totalMemoryBytes: number;
  freeMemoryBytes: number;
  loadAverage: number[];
  nodeVersion: string;
}

export type EndReason = 'duration' | 'ops' | 'time-limit' | 'interrupted';

export interface BenchReport {
  schema: typeof reportSchema;
  createdAt: string;
  /** The options of the run, all defaults filled in. */
  options: BenchOptions;
  mix: OpMix;
  target: { kind: 'local-cluster' | 'endpoints'; endpoints: string[]; nodes: number; replicationFactor: number | null; serverPids: number[] };
  machine: MachineInfo;
  preload: { keys: number; written: number; errors: number; seconds: number; keysPerSecond: number } | null;
  measured: { seconds: number; ops: number; errors: number; opsPerSecond: number; endedBy: EndReason; warmupSeconds: number };
  operations: OpReport[];
  total: OpReport;
  timeSeries: TimePoint[];
  cpu: { client: ClientCpu; server: ServerCpu | null };
  /** Writes to the block device of the servers' data over the measured phase; null when not measured or unavailable. */
  disk: DiskWrites | null;
  firstError: string | null;
  notes: string[];
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  return {
    hostname: hostname(),
    platform: platform(),
    release: release(),
    arch: arch(),
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    cpuCount: list.length,
    availableParallelism: availableParallelism(),
    cpuSpeedMhz: list[0]?.speed ?? 0,
    totalMemoryBytes: totalmem(),
    freeMemoryBytes: freemem(),
    loadAverage: loadavg(),
    nodeVersion: process.version,
  };
}

/** count / seconds, 0 for an empty interval. */
export function rate(count: number, seconds: number): number {
  return seconds > 0 ? count / seconds : 0;
}

/** Adds up error counts by code. */
export function mergeErrorCounts(parts: readonly Record<string, number>[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const part of parts) for (const [code, count] of Object.entries(part)) total[code] = (total[code] ?? 0) + count;
  return Object.fromEntries(Object.entries(total).sort(([a], [b]) => a.localeCompare(b)));
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

/** The report of one operation type from the workers' parts (histograms decoded and added). */
export function buildOpReport(op: OpName | 'total', parts: readonly WorkerOpResult[], seconds: number): OpReport {
  const histogram = mergeHistograms(parts.map((part) => decodeHistogram(part.histogram)));
  const errorsByCode = mergeErrorCounts(parts.map((part) => part.errors));
  const count = sum(parts.map((part) => part.count));
  return {
    op,
    count,
    errors: sum(Object.values(errorsByCode)),
    errorsByCode,
    opsPerSecond: rate(count, seconds),
    latency: summarizeLatency(histogram),
    percentileCurve: percentileCurve(histogram),
    histogram: encodeHistogram(histogram),
  };
}

/** Per-operation reports (in table order) and their total. */
export function buildOpReports(results: readonly WorkerResult[], seconds: number): { operations: OpReport[]; total: OpReport } {
  const operations: OpReport[] = [];
  const all: WorkerOpResult[] = [];
  for (const op of opNames) {
    const parts = results.map((result) => result.ops[op]).filter((part): part is WorkerOpResult => part !== undefined);
    if (parts.length === 0) continue;
    operations.push(buildOpReport(op, parts, seconds));
    all.push(...parts);
  }
  return { operations, total: buildOpReport('total', all, seconds) };
}

/**
 * Per-second throughput of the measured phase: buckets [i, i+1) seconds; completions after the
 * end (operations in flight when it came) count in the last bucket, whose width is what is left
 * of `seconds` (so a 2.5 s run has buckets of 1, 1 and 0.5 s).
 */
export function buildTimeSeries(results: readonly WorkerResult[], seconds: number): TimePoint[] {
  const buckets = Math.max(1, Math.ceil(seconds - 1e-9));
  const ops = new Map<OpName, number[]>();
  const errors = new Array<number>(buckets).fill(0);
  const latencySumUs = new Array<number>(buckets).fill(0);
  const fold = (target: number[], source: readonly number[]): void => {
    source.forEach((value, index) => {
      target[Math.min(index, buckets - 1)]! += value;
    });
  };
  for (const result of results) {
    for (const op of opNames) {
      const series = result.seriesOps[op];
      if (series === undefined) continue;
      if (!ops.has(op)) ops.set(op, new Array<number>(buckets).fill(0));
      fold(ops.get(op)!, series);
    }
    fold(errors, result.seriesErrors);
    fold(latencySumUs, result.seriesLatencySumUs);
  }
  return Array.from({ length: buckets }, (_, second) => {
    const width = Math.min(1, seconds - second) > 0 ? Math.min(1, seconds - second) : 1;
    const byOp: Partial<Record<OpName, number>> = {};
    let count = 0;
    for (const [op, series] of ops) {
      byOp[op] = series[second]! / width;
      count += series[second]!;
    }
    return {
      second,
      opsPerSecond: count / width,
      byOp,
      errorsPerSecond: errors[second]! / width,
      meanLatencyMs: count > 0 ? latencySumUs[second]! / count / 1000 : 0,
    };
  });
}

/** CPU microseconds per operation (0 when no operation). */
export function microsPerOp(cpuMicros: number, ops: number): number {
  return ops > 0 ? cpuMicros / ops : 0;
}

/** CPU time over wall time: 1.0 = one core. */
export function coresUsed(cpuMicros: number, wallMicros: number): number {
  return wallMicros > 0 ? cpuMicros / wallMicros : 0;
}

export function secondsToMicros(seconds: number): number {
  return seconds * microsPerSecond;
}
