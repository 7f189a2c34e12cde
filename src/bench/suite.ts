#!/usr/bin/env node
/**
 * `npm run bench:suite`: a fixed, bounded set of benchmark scenarios against one cluster (a
 * throwaway local one by default, or --endpoints), each written as JSON and HTML into
 * bench-results/<timestamp>/, then a summary table (also saved as summary.txt / summary.json).
 */
import { isEntryPoint } from '../common/entry-point.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { consistencyLevels, parseEndpoints, type ConsistencyLevel } from '../client/index.js';
import { startBenchCluster, waitUntilHealthy, type BenchCluster } from './bench-cluster.js';
import { BenchOptionsError, clientKinds, resolveBenchOptions, type BenchOptionsInput, type ClientKind } from './options.js';
import { formatCount, formatSeconds } from './progress-bar.js';
import { writeHtmlReport } from './report-html.js';
import { writeJsonReport } from './report-json.js';
import { formatMs, formatReport, formatTable } from './report-text.js';
import type { BenchReport } from './report.js';
import { BenchError, runBenchmark } from './runner.js';

/** Measured seconds of each scenario by default: long enough for a stable p99, short enough for a 2-minute suite. */
export const suiteDurationSecondsDefault = 10;
export const suiteWarmupSecondsDefault = 1;
/** Key space of the suite: preloaded once (~10-30 s on a laptop cluster). */
export const suiteKeysDefault = 20_000;
export const suiteLocalClusterDefault = 3;
export const suiteOutDirDefault = 'bench-results';
/** Between scenarios, wait (at most this long) for the replication backlog to drain. */
const settleTimeoutMs = 30_000;

export interface Scenario {
  name: string;
  /** What it shows. */
  purpose: string;
  /** Whether its keys must exist (preloaded once, by the first scenario that needs them). */
  needsData: boolean;
  options: BenchOptionsInput;
}

/**
 * The scenarios, in the order they run. Deletes happen only in the last one, so every read
 * scenario finds the preloaded keys.
 */
export const scenarios: readonly Scenario[] = [
  { name: 'throughput-put', purpose: 'peak write throughput', needsData: false, options: { workload: 'put', concurrency: 64 } },
  { name: 'throughput-get', purpose: 'peak read throughput', needsData: true, options: { workload: 'get', concurrency: 64 } },
  { name: 'latency-put', purpose: 'unloaded write latency (1 client)', needsData: true, options: { workload: 'put', concurrency: 1 } },
  { name: 'latency-get', purpose: 'unloaded read latency (1 client)', needsData: true, options: { workload: 'get', concurrency: 1 } },
  { name: 'hot-get-zipfian', purpose: 'reads of hot keys (zipfian 0.99)', needsData: true, options: { workload: 'get', distribution: 'zipfian', concurrency: 32 } },
  { name: 'cold-get-uniform', purpose: 'reads spread over every key', needsData: true, options: { workload: 'get', distribution: 'uniform', concurrency: 32 } },
  { name: 'ycsb-a-zipfian', purpose: 'YCSB A (50/50) on hot keys', needsData: true, options: { workload: 'ycsb-a', distribution: 'zipfian', concurrency: 32 } },
  { name: 'ycsb-a-uniform', purpose: 'YCSB A (50/50) spread out', needsData: true, options: { workload: 'ycsb-a', distribution: 'uniform', concurrency: 32 } },
  {
    name: 'clients-128-mixed',
    purpose: '128 concurrent clients: 60% get, 30% put, 10% delete',
    needsData: true,
    options: { workload: 'mixed', readRatio: 0.6, deleteRatio: 0.1, concurrency: 128 },
  },
];

const usage = `Usage: npm run bench:suite -- [options]
  (node dist/src/bench/suite.js [options])

Runs ${scenarios.length} bounded scenarios and writes <out-dir>/<timestamp>/<scenario>.json|.html,
summary.txt and summary.json:
${scenarios.map((s) => `  ${s.name.padEnd(20)} ${s.purpose}`).join('\n')}

Options:
  --endpoints h:p,...   bench this cluster (default: start a local one)
  --local-cluster N     size of the local cluster (default ${suiteLocalClusterDefault})
  --rf R                its replication factor (default min(3, N))
  --server-pids p,...   CPU of these server processes (with --endpoints)
  --duration S          measured seconds per scenario (default ${suiteDurationSecondsDefault})
  --warmup S            warmup seconds per scenario (default ${suiteWarmupSecondsDefault})
  --keys N              key space (default ${suiteKeysDefault}), preloaded once
  --threads T           load generator threads (default 1)
  --client sdk|raw      client used for the load (default raw)
  --consistency one|quorum|all   (default: the nodes')
  --only a,b            run only these scenarios
  --out-dir DIR         (default ${suiteOutDirDefault})
  --seed N              seed of every scenario (default random)
  -h, --help
`;

export interface SuiteRow {
  scenario: string;
  report: BenchReport | null;
  error: string | null;
}

function numberOption(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number)) throw new BenchOptionsError(`--${name} must be a number, got "${value}"`);
  return number;
}

/** The summary table of a suite run. */
export function formatSummary(rows: readonly SuiteRow[]): string {
  const header = ['SCENARIO', 'WORKLOAD', 'DIST', 'CONC', 'OPS/S', 'P50 MS', 'P99 MS', 'P99.9 MS', 'ERRORS', 'CLIENT µs/OP', 'SERVER µs/OP', 'DISK W/OP'];
  const table = rows.map(({ scenario, report, error }) => {
    if (report === null) return [scenario, 'FAILED', '', '', '', '', '', '', '', '', '', (error ?? '').slice(0, 60)];
    return [
      scenario,
      report.options.workload,
      report.options.distribution,
      String(report.options.concurrency),
      formatCount(report.measured.opsPerSecond),
      formatMs(report.total.latency.p50Ms),
      formatMs(report.total.latency.p99Ms),
      formatMs(report.total.latency.p999Ms),
      formatCount(report.total.errors),
      report.cpu.client.microsPerOp.toFixed(0),
      report.cpu.server === null ? '-' : report.cpu.server.microsPerOp.toFixed(0),
      // Disk write I/Os per operation on the cluster's device (docs/benchmarking.md, "Disk writes").
      report.disk === null ? '-' : report.disk.writesPerOp.toFixed(1),
    ];
  });
  return formatTable(header, table, 3);
}

function timestampDir(now: Date): string {
  return now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

/** Runs the suite with command-line `argv`; answers the exit code. */
export async function runSuite(argv: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        endpoints: { type: 'string' },
        'local-cluster': { type: 'string' },
        rf: { type: 'string' },
        'server-pids': { type: 'string' },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        keys: { type: 'string' },
        threads: { type: 'string' },
        client: { type: 'string' },
        consistency: { type: 'string' },
        only: { type: 'string' },
        'out-dir': { type: 'string' },
        seed: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    process.stderr.write(`bench suite: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }

  let common: BenchOptionsInput;
  let selected: Scenario[];
  let clusterSize: number | undefined;
  let rf: number | undefined;
  try {
    const consistency = values.consistency;
    if (consistency !== undefined && !(consistencyLevels as readonly string[]).includes(consistency)) {
      throw new BenchOptionsError(`--consistency must be one of ${consistencyLevels.join(', ')}`);
    }
    if (values.client !== undefined && !(clientKinds as readonly string[]).includes(values.client)) {
      throw new BenchOptionsError(`--client must be one of ${clientKinds.join(', ')}`);
    }
    const only = values.only?.split(',').map((name) => name.trim()).filter((name) => name !== '');
    const unknown = only?.filter((name) => !scenarios.some((scenario) => scenario.name === name)) ?? [];
    if (unknown.length > 0) throw new BenchOptionsError(`unknown scenario(s) ${unknown.join(', ')}; scenarios: ${scenarios.map((s) => s.name).join(', ')}`);
    selected = scenarios.filter((scenario) => only === undefined || only.includes(scenario.name));
    const endpoints = values.endpoints === undefined ? undefined : parseEndpoints(values.endpoints);
    clusterSize = endpoints === undefined ? (numberOption('local-cluster', values['local-cluster']) ?? suiteLocalClusterDefault) : undefined;
    rf = numberOption('rf', values.rf);
    common = {
      durationSeconds: numberOption('duration', values.duration) ?? suiteDurationSecondsDefault,
      warmupSeconds: numberOption('warmup', values.warmup) ?? suiteWarmupSecondsDefault,
      keys: numberOption('keys', values.keys) ?? suiteKeysDefault,
      threads: numberOption('threads', values.threads) ?? 1,
      seed: numberOption('seed', values.seed) ?? Math.floor(Math.random() * 2 ** 31),
      ...(values.client === undefined ? {} : { client: values.client as ClientKind }),
      ...(consistency === undefined ? {} : { consistency: consistency as ConsistencyLevel }),
      ...(endpoints === undefined ? {} : { endpoints }),
      ...(values['server-pids'] === undefined ? {} : { serverPids: values['server-pids'].split(',').map((pid) => Number(pid.trim())) }),
    };
    // Check every scenario's options before starting anything.
    for (const scenario of selected) resolveBenchOptions({ endpoints: ['127.0.0.1:1'], ...common, ...scenario.options, preload: false });
    if (clusterSize !== undefined) resolveBenchOptions({ localCluster: clusterSize, ...(rf === undefined ? {} : { replicationFactor: rf }) });
  } catch (error) {
    if (error instanceof BenchOptionsError || error instanceof Error) {
      process.stderr.write(`bench suite: ${error.message}\n`);
      return 2;
    }
    throw error;
  }

  const outDir = join(values['out-dir'] ?? suiteOutDirDefault, timestampDir(new Date()));
  mkdirSync(outDir, { recursive: true });
  const controller = new AbortController();
  const onSigint = (): void => {
    process.stderr.write('\ninterrupted: ending the current scenario, skipping the rest...\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  const progress = { write: (chunk: string) => process.stderr.write(chunk), isTTY: process.stderr.isTTY === true };
  const rows: SuiteRow[] = [];
  let cluster: BenchCluster | undefined;
  const startedAt = Date.now();
  try {
    if (clusterSize !== undefined) {
      process.stderr.write(`starting a local cluster of ${clusterSize} nodes...\n`);
      cluster = await startBenchCluster(clusterSize, rf);
      process.stderr.write(`local cluster up: ${cluster.endpoints.join(', ')} (replication factor ${cluster.replicationFactor})\n`);
    }
    const endpoints = cluster?.endpoints ?? common.endpoints!;
    let preloaded = false;
    for (const [index, scenario] of selected.entries()) {
      if (controller.signal.aborted) break;
      process.stderr.write(`\n[${index + 1}/${selected.length}] ${scenario.name}: ${scenario.purpose}\n`);
      if (!(await waitUntilHealthy(endpoints, true, settleTimeoutMs))) {
        process.stderr.write(`  note: replication backlog or unreachable peers after ${settleTimeoutMs / 1000} s; starting anyway\n`);
      }
      try {
        const options = resolveBenchOptions({ ...common, endpoints, ...scenario.options, preload: scenario.needsData && !preloaded });
        const report = await runBenchmark(options, { progress, signal: controller.signal }, cluster);
        if (scenario.needsData) preloaded = true;
        writeJsonReport(join(outDir, `${scenario.name}.json`), report);
        writeHtmlReport(join(outDir, `${scenario.name}.html`), report);
        writeFileSync(join(outDir, `${scenario.name}.txt`), formatReport(report));
        rows.push({ scenario: scenario.name, report, error: null });
        process.stderr.write(
          `  ${formatCount(report.measured.opsPerSecond)} ops/s, p50 ${formatMs(report.total.latency.p50Ms)} ms, p99 ${formatMs(report.total.latency.p99Ms)} ms, ${formatCount(report.total.errors)} errors\n`,
        );
      } catch (error) {
        if (!(error instanceof BenchError)) throw error;
        rows.push({ scenario: scenario.name, report: null, error: error.message });
        process.stderr.write(`  failed: ${error.message}\n`);
        if (error.unreachable) break;
      }
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
    if (cluster !== undefined) {
      process.stderr.write('stopping the local cluster...\n');
      await cluster.stop();
    }
  }
  const summary = formatSummary(rows);
  writeFileSync(join(outDir, 'summary.txt'), summary);
  writeFileSync(
    join(outDir, 'summary.json'),
    `${JSON.stringify(
      rows.map(({ scenario, report, error }) => ({
        scenario,
        error,
        opsPerSecond: report?.measured.opsPerSecond ?? null,
        latencyMs: report?.total.latency ?? null,
        errors: report?.total.errors ?? null,
        clientMicrosPerOp: report?.cpu.client.microsPerOp ?? null,
        serverMicrosPerOp: report?.cpu.server?.microsPerOp ?? null,
        diskWritesPerOp: report?.disk?.writesPerOp ?? null,
      })),
      null,
      2,
    )}\n`,
  );
  process.stdout.write(`\nbench suite: ${rows.length} scenario(s) in ${formatSeconds((Date.now() - startedAt) / 1000)}; reports in ${outDir}\n\n${summary}`);
  return rows.every((row) => row.report !== null && row.report.total.count > 0) ? 0 : 3;
}


if (isEntryPoint(import.meta.url)) {
  runSuite(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`bench suite: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
