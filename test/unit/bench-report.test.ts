import { describe, expect, it } from 'vitest';
import {
  createLatencyHistogram,
  decodeHistogram,
  encodeHistogram,
  latencyUsMax,
  mergeHistograms,
  percentileCurve,
  recordLatencyUs,
  summarizeLatency,
} from '../../src/bench/histogram.js';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { diskWritesBetween } from '../../src/bench/disk-io.js';
import { etcdUnaryCalls } from '../../src/bench/etcd-calls.js';
import type { WorkerResult } from '../../src/bench/messages.js';
import { BenchOptionsError, resolveBenchOptions } from '../../src/bench/options.js';
import { defaultConnections, planWorkers } from '../../src/bench/plan.js';
import { parseProcStat } from '../../src/bench/proc-cpu.js';
import { formatProgress, ProgressBar, RateMeter, renderBar } from '../../src/bench/progress-bar.js';
import { linearAxis, niceStep, percentileLabel, percentileX, renderHtmlReport, tickLabel } from '../../src/bench/report-html.js';
import { reportToJson } from '../../src/bench/report-json.js';
import { formatDisk, formatReport } from '../../src/bench/report-text.js';
import { buildOpReports, buildTimeSeries, coresUsed, machineInfo, mergeErrorCounts, microsPerOp, rate, reportSchema, type BenchReport } from '../../src/bench/report.js';
import { formatSummary } from '../../src/bench/suite.js';

/** A histogram holding 1..n microseconds once each. */
function ramp(n: number, from = 1) {
  const histogram = createLatencyHistogram();
  for (let us = from; us < from + n; us++) recordLatencyUs(histogram, us);
  return histogram;
}

describe('latency histogram', () => {
  it('reports percentiles in ms within HdrHistogram precision (3 digits)', () => {
    const summary = summarizeLatency(ramp(10_000));
    expect(summary.count).toBe(10_000);
    expect(summary.p50Ms).toBeCloseTo(5, 2);
    expect(summary.p99Ms).toBeCloseTo(9.9, 2);
    expect(summary.p999Ms).toBeCloseTo(9.99, 2);
    expect(summary.maxMs).toBeCloseTo(10, 2);
    expect(summary.minMs).toBeCloseTo(0.001, 6);
    expect(summary.meanMs).toBeCloseTo(5, 2);
  });

  it('clamps values outside the trackable range', () => {
    const histogram = createLatencyHistogram();
    recordLatencyUs(histogram, 0.2);
    recordLatencyUs(histogram, latencyUsMax * 10);
    expect(histogram.totalCount).toBe(2);
    expect(histogram.minNonZeroValue).toBe(1);
    expect(histogram.maxValue).toBeGreaterThanOrEqual(latencyUsMax * 0.999);
  });

  it('merges encoded parts into the same distribution as one histogram', () => {
    const whole = ramp(20_000);
    const parts = [ramp(10_000), ramp(10_000, 10_001)].map((part) => decodeHistogram(encodeHistogram(part)));
    const merged = summarizeLatency(mergeHistograms(parts));
    const expected = summarizeLatency(whole);
    expect(merged.count).toBe(expected.count);
    // Equal within HdrHistogram's precision (adding reports a bucket's highest equivalent value).
    for (const field of ['p50Ms', 'p90Ms', 'p99Ms', 'p999Ms', 'maxMs', 'meanMs'] as const) {
      expect(Math.abs(merged[field] - expected[field]) / expected[field]).toBeLessThan(1e-3);
    }
  });

  it('is empty-safe', () => {
    expect(summarizeLatency(createLatencyHistogram()).p99Ms).toBe(0);
    expect(percentileCurve(createLatencyHistogram())).toEqual([]);
  });

  it('gives an HDR percentile curve up to what the count supports, then the max', () => {
    const curve = percentileCurve(ramp(1000));
    expect(curve[0]!.percentile).toBe(0);
    expect(curve.at(-1)).toEqual({ percentile: 100, latencyMs: summarizeLatency(ramp(1000)).maxMs });
    // 1000 values: points up to 99.9% (1/(1-p) = 1000), not beyond.
    const beforeMax = curve.at(-2)!;
    expect(beforeMax.percentile).toBeCloseTo(99.9, 6);
    for (let i = 1; i < curve.length; i++) expect(curve[i]!.latencyMs).toBeGreaterThanOrEqual(curve[i - 1]!.latencyMs);
  });
});

function workerResult(index: number, gets: number[], puts: number[], errors: Record<string, number>, series: number[]): WorkerResult {
  const histogram = (values: number[]) => {
    const h = createLatencyHistogram();
    for (const value of values) recordLatencyUs(h, value);
    return encodeHistogram(h);
  };
  return {
    index,
    ops: {
      get: { count: gets.length, errors: {}, histogram: histogram(gets) },
      put: { count: puts.length, errors, histogram: histogram(puts) },
    },
    seriesOps: { get: series, put: [] },
    seriesErrors: [1],
    seriesLatencySumUs: series.map((count) => count * 1000),
    lastCompletionAtMs: 0,
    firstError: undefined,
  };
}

describe('report math', () => {
  it('adds up workers: counts, errors by code, rates, total', () => {
    const results = [
      workerResult(0, [1000, 2000], [3000], { UNAVAILABLE: 2 }, [1, 1]),
      workerResult(1, [4000], [], { UNAVAILABLE: 1, DEADLINE_EXCEEDED: 1 }, [1]),
    ];
    const { operations, total } = buildOpReports(results, 2);
    expect(operations.map((op) => op.op)).toEqual(['get', 'put']);
    const [get, put] = operations;
    expect(get!.count).toBe(3);
    expect(get!.opsPerSecond).toBe(1.5);
    expect(get!.latency.maxMs).toBeCloseTo(4, 2);
    expect(put!.errorsByCode).toEqual({ DEADLINE_EXCEEDED: 1, UNAVAILABLE: 3 });
    expect(put!.errors).toBe(4);
    expect(total.count).toBe(4);
    expect(total.errors).toBe(4);
    expect(total.latency.count).toBe(4);
  });

  it('buckets completions per second, folding late ones into a partial last bucket', () => {
    const result = workerResult(0, [], [], {}, [10, 20, 5, 1]);
    const series = buildTimeSeries([result], 2.5);
    expect(series.map((point) => point.second)).toEqual([0, 1, 2]);
    expect(series[0]!.opsPerSecond).toBe(10);
    expect(series[1]!.opsPerSecond).toBe(20);
    // (5 + 1) completions in a 0.5 s bucket.
    expect(series[2]!.opsPerSecond).toBe(12);
    expect(series[0]!.errorsPerSecond).toBe(1);
    expect(series[1]!.meanLatencyMs).toBe(1);
  });

  it('guards divisions by zero', () => {
    expect(rate(10, 0)).toBe(0);
    expect(microsPerOp(1000, 0)).toBe(0);
    expect(coresUsed(1000, 0)).toBe(0);
    expect(coresUsed(2_000_000, 1_000_000)).toBe(2);
    expect(mergeErrorCounts([{ B: 1 }, { A: 2, B: 1 }])).toEqual({ A: 2, B: 2 });
  });

  it('reads utime and stime from /proc/<pid>/stat even with a strange command name', () => {
    const line = '1234 (node (x) y) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 11 0 123 456 789';
    expect(parseProcStat(line)).toEqual({ utimeTicks: 250, stimeTicks: 75 });
    expect(() => parseProcStat('garbage')).toThrow();
  });
});

describe('load layout', () => {
  it('spreads loops, channels and preload keys over threads and endpoints', () => {
    const endpoints = ['a:1', 'b:1', 'c:1'];
    const plans = planWorkers({ threads: 2, concurrency: 17, connections: 9, endpoints, keys: 1001 });
    expect(plans.map((plan) => plan.loops)).toEqual([9, 8]);
    expect(plans.map((plan) => plan.channelEndpoints)).toEqual([
      ['a:1', 'b:1', 'c:1', 'a:1', 'b:1'],
      ['c:1', 'a:1', 'b:1', 'c:1'],
    ]);
    expect(plans.map((plan) => [plan.preloadStart, plan.preloadEnd])).toEqual([
      [0, 501],
      [501, 1001],
    ]);
    expect(() => planWorkers({ threads: 3, concurrency: 2, connections: 3, endpoints, keys: 10 })).toThrow(RangeError);
  });

  it('defaults to one connection per loop, at most 8 per endpoint, at least one per thread', () => {
    expect(defaultConnections(1, 1, 1)).toBe(1);
    expect(defaultConnections(16, 3, 1)).toBe(16);
    expect(defaultConnections(128, 3, 1)).toBe(24);
    expect(defaultConnections(4, 1, 4)).toBe(4);
  });

  it('fills in workload defaults and names the flag at fault', () => {
    const ycsb = resolveBenchOptions({ workload: 'ycsb-a', endpoints: ['h:1'] });
    expect(ycsb).toMatchObject({ distribution: 'zipfian', preload: true, readRatio: 0.5, durationSeconds: 10, warmupSeconds: 1, keys: 100_000 });
    expect(resolveBenchOptions({ workload: 'put', endpoints: ['h:1'] }).preload).toBe(false);
    expect(resolveBenchOptions({ ops: 100, endpoints: ['h:1'] }).durationSeconds).toBe(3600);
    expect(() => resolveBenchOptions({ concurrency: 0, endpoints: ['h:1'] })).toThrow(/--concurrency/);
    expect(() => resolveBenchOptions({ zipfSkew: 1, endpoints: ['h:1'] })).toThrow(BenchOptionsError);
    expect(() => resolveBenchOptions({ durationSeconds: 100_000, endpoints: ['h:1'] })).toThrow(/--duration/);
    expect(() => resolveBenchOptions({ replicationFactor: 2, endpoints: ['h:1'] })).toThrow(/--rf/);
    expect(() => resolveBenchOptions({})).toThrow(/endpoints/);
    expect(() => resolveBenchOptions({ client: 'etcd', localCluster: 3 })).toThrow(/--client etcd .*--endpoints/);
    expect(() => resolveBenchOptions({ client: 'etcd', endpoints: ['h:1'], token: 't' })).toThrow(/no token/);
    expect(resolveBenchOptions({ client: 'etcd', endpoints: ['h:1'] }).client).toBe('etcd');
  });
});

describe('etcd baseline requests', () => {
  /** Field number to bytes (length-delimited) or number (varint) of one encoded request. */
  const fields = (bytes: Buffer): Map<number, Uint8Array | number> => {
    const reader = new BinaryReader(bytes);
    const out = new Map<number, Uint8Array | number>();
    while (reader.pos < reader.len) {
      const [no, wireType] = reader.tag();
      out.set(no, wireType === 2 ? reader.bytes() : reader.uint32());
    }
    return out;
  };

  it('encodes Put, Range and DeleteRange as etcd v3 reads them, a 300-byte value with a two-byte length', () => {
    const calls = etcdUnaryCalls('quorum');
    const key = Buffer.from('bench:7');
    const value = Buffer.alloc(300, 7);
    expect(calls.paths).toEqual({ get: '/etcdserverpb.KV/Range', put: '/etcdserverpb.KV/Put', delete: '/etcdserverpb.KV/DeleteRange' });
    const put = fields(calls.encode('put', key, value));
    expect(Buffer.from(put.get(1) as Uint8Array)).toEqual(key);
    expect(Buffer.from(put.get(2) as Uint8Array)).toEqual(value);
    expect([...fields(calls.encode('get', key, value)).keys()]).toEqual([1]);
    expect([...fields(calls.encode('delete', key, value)).keys()]).toEqual([1]);
  });

  it('reads serializably at ONE and linearizably otherwise', () => {
    const key = Buffer.from('k');
    expect(fields(etcdUnaryCalls('one').encode('get', key, Buffer.alloc(0))).get(7)).toBe(1);
    expect(fields(etcdUnaryCalls('all').encode('get', key, Buffer.alloc(0))).has(7)).toBe(false);
    expect(fields(etcdUnaryCalls(undefined).encode('get', key, Buffer.alloc(0))).has(7)).toBe(false);
  });
});

describe('progress and chart helpers', () => {
  it('draws a bar and a progress line', () => {
    expect(renderBar(0.5, 10)).toBe('[#####.....]');
    expect(renderBar(2, 4)).toBe('[####]');
    const line = formatProgress({ phase: 'run', fraction: 0.42, elapsedSeconds: 4.2, remainingSeconds: 5.8, opsPerSecond: 12345.4, ops: 51234, errors: 0 });
    expect(line).toContain('42%');
    expect(line).toContain('12,345 ops/s');
    expect(line).toContain('5.8s left');
  });

  it('redraws in place on a terminal and prints every 2 s otherwise', () => {
    const written: string[] = [];
    let now = 0;
    const tty = new ProgressBar({ write: (chunk) => written.push(chunk), isTTY: true });
    tty.update('a');
    expect(written.at(-1)).toBe('\ra\x1b[K');
    written.length = 0;
    const log = new ProgressBar({ write: (chunk) => written.push(chunk) }, 2000, () => now);
    log.update('1');
    now = 1000;
    log.update('2');
    now = 2100;
    log.update('3');
    expect(written).toEqual(['1\n', '3\n']);
  });

  it('measures a rate over a sliding window', () => {
    const meter = new RateMeter(1000);
    meter.add(0, 0);
    meter.add(500, 100);
    meter.add(1000, 200);
    meter.add(2000, 1200);
    expect(meter.rate()).toBe(1000);
  });

  it('places percentiles on a log scale of 1/(1-p)', () => {
    expect(percentileX(0, 1000)).toBe(0);
    expect(percentileX(90, 1000)).toBeCloseTo(1, 9);
    expect(percentileX(99.9, 1000)).toBeCloseTo(3, 9);
    expect(percentileX(100, 1000)).toBeCloseTo(3, 9);
    expect([0, 1, 2, 3, 4].map(percentileLabel)).toEqual(['0%', '90%', '99%', '99.9%', '99.99%']);
    expect(niceStep(1000)).toBe(200);
    expect(niceStep(7)).toBe(2);
    expect(tickLabel(0.25, 0.05)).toBe('0.25');
    expect(tickLabel(2000, 500)).toBe('2,000');
    const axis = linearAxis(118, 'ms');
    expect(axis.max).toBe(120);
    expect(axis.ticks.map((tick) => tick.label)).toEqual(['0', '20', '40', '60', '80', '100', '120']);
  });
});

describe('rendered reports', () => {
  const report = (): BenchReport => {
    const results = [workerResult(0, [1000, 2000, 3000], [5000], { UNAVAILABLE: 1 }, [2, 1])];
    const { operations, total } = buildOpReports(results, 2);
    return {
      schema: reportSchema,
      createdAt: '2026-01-01T00:00:00.000Z',
      options: resolveBenchOptions({ workload: 'ycsb-a', endpoints: ['127.0.0.1:50051'], seed: 1 }),
      mix: { get: 0.5, put: 0.5, delete: 0 },
      target: { kind: 'endpoints', endpoints: ['127.0.0.1:50051'], nodes: 1, replicationFactor: null, serverPids: [] },
      machine: machineInfo(),
      preload: null,
      measured: { seconds: 2, ops: total.count, errors: total.errors, opsPerSecond: total.opsPerSecond, endedBy: 'duration', warmupSeconds: 1 },
      operations,
      total,
      timeSeries: buildTimeSeries(results, 2),
      cpu: {
        client: { method: 'm', userMicros: 1, systemMicros: 1, totalMicros: 2, wallMicros: 2e6, cores: 0, microsPerOp: 0.5, mainEventLoopUtilization: 0.1, workerEventLoopUtilization: [0.5] },
        server: null,
      },
      disk: null,
      firstError: 'UNAVAILABLE: <too few replicas>',
      notes: ['a note'],
    };
  };

  it('prints a table per operation, errors by status and CPU', () => {
    const text = formatReport(report());
    expect(text).toMatch(/OP\s+COUNT\s+OPS\/S\s+ERRORS\s+P50 MS\s+P95 MS\s+P99 MS\s+P99\.9 MS\s+MAX MS/);
    expect(text).toMatch(/^get\s+3\s+2\s+0\s+2\.00/m);
    expect(text).toContain('put: UNAVAILABLE 1');
    expect(text).toContain('load generator:');
  });

  const vda = (writesCompleted: number, sectorsWritten: number, flushesCompleted: number | null) => ({ major: 254, minor: 0, name: 'vda', writesCompleted, sectorsWritten, flushesCompleted });
  /** 5 measured operations (4 successes, 1 error) over 2 s: 12 write I/Os, 96 KiB, 2 flushes. */
  const withDisk = (flushes: number | null = 2): BenchReport => {
    const base = report();
    const disk = diskWritesBetween('/tmp/kvstore-bench-x', vda(100, 1000, flushes === null ? null : 7), vda(112, 1000 + 12 * 16, flushes === null ? null : 7 + flushes), 5, 2e6);
    return { ...base, target: { ...base.target, kind: 'local-cluster' }, disk };
  };

  it('prints the disk writes of the measured phase per operation, after the CPU figures', () => {
    const text = formatReport(withDisk());
    expect(text).toContain("disk: 12 write I/Os (2.4 per op, 6/s), 96.0 KiB written (19.2 KiB per op), 2 flushes (0.4 per op) on vda — the whole device: other processes' writes count too");
    expect(text.indexOf('disk:')).toBeGreaterThan(text.indexOf('servers:'));
    expect(text.indexOf('disk:')).toBeLessThan(text.indexOf('notes:'));
    // A kernel without flush counters: no flushes figure.
    expect(formatDisk(withDisk(null).disk!)).toBe("disk: 12 write I/Os (2.4 per op, 6/s), 96.0 KiB written (19.2 KiB per op) on vda — the whole device: other processes' writes count too");
  });

  it('says why there is no disk figure', () => {
    expect(formatReport(report())).toContain('disk: not measured (only with --local-cluster');
    const local = report();
    expect(formatReport({ ...local, target: { ...local.target, kind: 'local-cluster' } })).toContain('disk: unavailable (see notes)');
  });

  it('puts the disk figures in the JSON report next to cpu (null when unavailable)', () => {
    const json = JSON.parse(reportToJson(withDisk())) as Record<string, unknown>;
    const keys = Object.keys(json);
    expect(keys.indexOf('disk')).toBe(keys.indexOf('cpu') + 1);
    expect(json['disk']).toMatchObject({ device: 'vda', major: 254, minor: 0, writes: 12, bytesWritten: 98_304, flushes: 2, writesPerOp: 2.4, writesPerSecond: 6, path: '/tmp/kvstore-bench-x' });
    expect((JSON.parse(reportToJson(report())) as Record<string, unknown>)['disk']).toBeNull();
  });

  it('shows the disk line in the HTML report', () => {
    expect(renderHtmlReport(withDisk())).toContain('disk: 12 write I/Os (2.4 per op, 6/s), 96.0 KiB written');
  });

  it('puts disk writes per operation in the suite summary (- when not measured)', () => {
    const summary = formatSummary([
      { scenario: 'with-disk', report: withDisk(), error: null },
      { scenario: 'no-disk', report: report(), error: null },
    ]);
    const [header, first, second] = summary.split('\n');
    expect(header).toMatch(/SERVER µs\/OP\s+DISK W\/OP$/);
    expect(first).toMatch(/^with-disk\s.*\s2\.4$/);
    expect(second).toMatch(/^no-disk\s.*\s-$/);
  });

  it('renders a self-contained HTML page with inline SVG charts', () => {
    const html = renderHtmlReport(report());
    expect(html.match(/<svg /g)?.length).toBe(3);
    expect(html).not.toMatch(/<script|<link|src=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(html).toContain('&lt;too few replicas&gt;');
  });
});
