/**
 * `kvctl bench`: the load generator (src/bench) on the command line. See docs/benchmarking.md.
 */
import { resolve } from 'node:path';
import { BenchOptionsError, clientKinds, concurrencyDefault, durationSecondsDefault, durationSecondsMax, keysDefault, resolveBenchOptions, timeoutMsDefault, valueBytesDefault, warmupSecondsDefault, type BenchOptionsInput, type ClientKind } from '../bench/options.js';
import { writeHtmlReport } from '../bench/report-html.js';
import { reportToJson, writeJsonReport } from '../bench/report-json.js';
import { formatReport } from '../bench/report-text.js';
import { BenchError, runBenchmark } from '../bench/runner.js';
import { distributions, type Distribution, zipfSkewDefault } from '../bench/key-chooser.js';
import { isWorkloadName, readRatioDefault, workloadNames } from '../bench/workload.js';
import { exitCode, integerFlag, stringFlag, UsageError, type KvctlCommand, type KvctlFlagValues, type KvctlOption } from './kvctl-command.js';

const help = [
  'Generates load against a cluster and reports throughput, latency percentiles (HDR histogram,',
  'microsecond resolution), errors by gRPC status, CPU use and, with --local-cluster, the writes to',
  'the disk holding the data (/proc/diskstats). Every run is bounded in time.',
  'Progress goes to stderr; the report to stdout (--json: the JSON report instead).',
  '',
  'Workload (positional or --workload; default mixed):',
  '  put | get | delete         100% of one operation',
  `  mixed                      gets with --read-ratio (default ${readRatioDefault}), deletes with`,
  '                             --delete-ratio (default 0), puts otherwise',
  '  ycsb-a | ycsb-b            YCSB A (50% get / 50% put) and B (95% / 5%), zipfian by default',
  '',
  'Global options that apply: --endpoints (the nodes to load; channels are spread over all of them),',
  `--consistency (of every call), --timeout (deadline of each call, default ${timeoutMsDefault}), --token.`,
  '',
  'Exit codes: 0 done; 2 bad flags; 3 the run failed or no operation succeeded; 4 cannot connect.',
  'Ctrl-C ends the measured phase early and still prints the report.',
].join('\n');

const workloadGroup = 'Workload:';
const keysGroup = 'Keys and values:';
const loadGroup = 'Load:';
const durationGroup = 'Duration (always bounded):';
const targetGroup = 'Target:';
const outputGroup = 'Output:';

const options: KvctlOption[] = [
  { flags: '--workload <name>', group: workloadGroup, description: `${workloadNames.join(' | ')} (or as the argument)` },
  { flags: '--read-ratio <r>', group: workloadGroup, description: `mixed: share of gets (default ${readRatioDefault})` },
  { flags: '--delete-ratio <r>', group: workloadGroup, description: 'mixed: share of deletes (default 0)' },
  { flags: '--keys <N>', group: keysGroup, description: `key space size (default ${keysDefault}); keys are <prefix><index zero-padded>` },
  { flags: '--key-prefix <P>', group: keysGroup, description: 'key prefix (default "bench:")' },
  { flags: '--distribution <uniform|zipfian>', group: keysGroup, description: 'key popularity (default uniform; zipfian for ycsb-*)' },
  { flags: '--zipf-skew <S>', group: keysGroup, description: `zipfian constant, 0.01..0.9999 (default ${zipfSkewDefault}); hot keys are scattered over the key space` },
  { flags: '--value-bytes <B>', group: keysGroup, description: `size of each value written (default ${valueBytesDefault})` },
  { flags: '--preload', group: keysGroup, description: 'write every key once before measuring (default on for get, mixed, ycsb-*)' },
  { flags: '--no-preload', group: keysGroup, description: 'measure without writing the keys first' },
  { flags: '--concurrency <C>', group: loadGroup, description: `operations in flight, each a closed loop (default ${concurrencyDefault})` },
  {
    flags: '--connections <K>',
    group: loadGroup,
    description: 'gRPC channels in total, spread over the endpoints and threads (default: --client sdk one per endpoint and thread, else one per loop up to 8 per endpoint; at least one per thread)',
  },
  { flags: '--threads <T>', group: loadGroup, description: 'worker threads generating the load (default 1); each runs C/T loops on its own channels' },
  {
    flags: '--client <kind>',
    group: loadGroup,
    description: `${clientKinds.join(' | ')}: issue calls through the KvClient SDK (default; concurrent calls on a connection coalesced into OperationStream messages), the SDK sending Batch calls instead, the SDK with coalescing off, bare grpc-js clients (one unary call per operation), or the same bare clients calling an etcd v3 cluster at --endpoints (a baseline)`,
  },
  { flags: '--duration <S>', group: durationGroup, description: `measured seconds (default ${durationSecondsDefault}; at most ${durationSecondsMax})` },
  { flags: '--ops <N>', group: durationGroup, description: `stop after N measured operations (time limit: --duration, else ${durationSecondsMax} s)` },
  { flags: '--warmup <S>', group: durationGroup, description: `seconds of unmeasured load first (default ${warmupSecondsDefault})` },
  {
    flags: '--local-cluster <N>',
    group: targetGroup,
    description: "start a throwaway cluster of N local nodes in a temp dir, bench it, stop it; also reports the write I/Os and bytes of that dir's block device (whole device)",
  },
  { flags: '--rf <R>', group: targetGroup, description: 'replication factor of the local cluster (default min(3, N))' },
  { flags: '--auth', group: targetGroup, description: 'start the local cluster with auth (a users file of one user) and send its token' },
  { flags: '--tls', group: targetGroup, description: 'start the local cluster with TLS on both ports (mutual TLS between nodes; development certificates made for the run) and load it over TLS' },
  { flags: '--server-cpu-prof <DIR>', group: targetGroup, description: "with --local-cluster: run every node under node --cpu-prof, writing each node's .cpuprofile into DIR when the run ends" },
  { flags: '--server-pids <p1,p2>', group: targetGroup, description: "measure these local server processes' CPU (/proc/<pid>/stat)" },
  { flags: '--out <FILE.json>', group: outputGroup, description: 'write the full report as JSON' },
  { flags: '--html <FILE.html>', group: outputGroup, description: 'write a self-contained HTML report with charts' },
  { flags: '--seed <N>', group: outputGroup, description: 'seed of every random choice (default random; printed in the report)' },
];

/** Ctrl-C presses that quit at once, skipping the report and the local cluster's cleanup. */
const sigintsToQuit = 3;
/** 128 + SIGINT, as a shell reports it. */
const exitCodeInterrupted = 130;

function numberFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = value.trim() === '' ? Number.NaN : Number(value);
  if (!Number.isFinite(number)) throw new UsageError(`${flag} must be a number, got "${value}"`);
  return number;
}

function intFlag(flags: KvctlFlagValues, name: string): number | undefined {
  const value = stringFlag(flags, name);
  return value === undefined ? undefined : integerFlag(`--${name}`, value, 0, Number.MAX_SAFE_INTEGER);
}

function listOfPids(value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  return value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
    .map((part) => integerFlag('--server-pids', part, 1, 2 ** 31 - 1));
}

/** Turns kvctl's parsed flags into benchmark options (not yet checked: see resolveBenchOptions). */
export function benchInputFromFlags(args: readonly string[], flags: KvctlFlagValues, globals: { endpoints: string[]; consistency?: BenchOptionsInput['consistency']; timeoutMs?: number; token?: string }): BenchOptionsInput {
  if (args.length > 1) throw new UsageError(`bench takes at most one argument (the workload), got ${args.length}`);
  const positional = args[0];
  const flagged = stringFlag(flags, 'workload');
  if (positional !== undefined && flagged !== undefined && positional !== flagged) {
    throw new UsageError(`workload given twice: "${positional}" and --workload "${flagged}"`);
  }
  const workload = positional ?? flagged;
  if (workload !== undefined && !isWorkloadName(workload)) {
    throw new UsageError(`unknown workload "${workload}"; workloads: ${workloadNames.join(', ')}`);
  }
  const distribution = stringFlag(flags, 'distribution');
  if (distribution !== undefined && !(distributions as readonly string[]).includes(distribution)) {
    throw new UsageError(`--distribution must be one of ${distributions.join(', ')}, got "${distribution}"`);
  }
  const client = stringFlag(flags, 'client');
  if (client !== undefined && !(clientKinds as readonly string[]).includes(client)) {
    throw new UsageError(`--client must be one of ${clientKinds.join(', ')}, got "${client}"`);
  }
  const input: BenchOptionsInput = { endpoints: globals.endpoints };
  const set = <K extends keyof BenchOptionsInput>(key: K, value: BenchOptionsInput[K] | undefined): void => {
    if (value !== undefined) input[key] = value;
  };
  set('workload', workload as BenchOptionsInput['workload']);
  set('readRatio', numberFlag('--read-ratio', stringFlag(flags, 'read-ratio')));
  set('deleteRatio', numberFlag('--delete-ratio', stringFlag(flags, 'delete-ratio')));
  set('distribution', distribution as Distribution | undefined);
  set('zipfSkew', numberFlag('--zipf-skew', stringFlag(flags, 'zipf-skew')));
  set('keys', intFlag(flags, 'keys'));
  set('keyPrefix', stringFlag(flags, 'key-prefix'));
  set('preload', typeof flags['preload'] === 'boolean' ? flags['preload'] : undefined);
  set('valueBytes', intFlag(flags, 'value-bytes'));
  set('concurrency', intFlag(flags, 'concurrency'));
  set('connections', intFlag(flags, 'connections'));
  set('threads', intFlag(flags, 'threads'));
  set('durationSeconds', numberFlag('--duration', stringFlag(flags, 'duration')));
  set('ops', intFlag(flags, 'ops'));
  set('warmupSeconds', numberFlag('--warmup', stringFlag(flags, 'warmup')));
  set('consistency', globals.consistency);
  set('timeoutMs', globals.timeoutMs);
  set('localCluster', intFlag(flags, 'local-cluster'));
  set('replicationFactor', intFlag(flags, 'rf'));
  set('serverPids', listOfPids(stringFlag(flags, 'server-pids')));
  set('seed', intFlag(flags, 'seed'));
  set('client', client as ClientKind | undefined);
  set('token', globals.token);
  set('auth', flags['auth'] === true ? true : undefined);
  set('tls', flags['tls'] === true ? true : undefined);
  const profileDir = stringFlag(flags, 'server-cpu-prof');
  set('serverCpuProfileDir', profileDir === undefined ? undefined : resolve(profileDir));
  return input;
}

export const benchCommand: KvctlCommand = {
  name: 'bench',
  arguments: '[workload]',
  summary: 'Benchmark a cluster (or a throwaway local one): throughput, latency, CPU',
  options,
  help,
  async run(context) {
    let options;
    try {
      options = resolveBenchOptions(benchInputFromFlags(context.args, context.flags, context.globals));
    } catch (error) {
      if (error instanceof BenchOptionsError) throw new UsageError(error.message);
      throw error;
    }
    // First Ctrl-C: end the run early and still report; third: quit without cleanup.
    const controller = new AbortController();
    let sigints = 0;
    const onSigint = (): void => {
      sigints += 1;
      if (sigints === 1) {
        context.io.stderr.write('\ninterrupted: finishing the operations in flight (Ctrl-C twice more to quit at once)...\n');
        controller.abort();
      } else if (sigints >= sigintsToQuit) {
        process.exit(exitCodeInterrupted);
      }
    };
    process.on('SIGINT', onSigint);
    let report;
    try {
      report = await runBenchmark(options, {
        progress: { write: (chunk: string) => context.io.stderr.write(chunk), isTTY: context.io.stderr.isTTY === true },
        signal: controller.signal,
      });
    } catch (error) {
      if (error instanceof BenchError) {
        context.io.stderr.write(`kvctl: bench: ${error.message}\n`);
        return error.unreachable ? exitCode.unreachable : exitCode.server;
      }
      throw error;
    } finally {
      process.removeListener('SIGINT', onSigint);
    }
    const out = stringFlag(context.flags, 'out');
    const html = stringFlag(context.flags, 'html');
    if (out !== undefined) writeJsonReport(out, report);
    if (html !== undefined) writeHtmlReport(html, report);
    await context.write(context.globals.json ? reportToJson(report) : formatReport(report));
    if (out !== undefined) context.io.stderr.write(`report written to ${out}\n`);
    if (html !== undefined) context.io.stderr.write(`HTML report written to ${html}\n`);
    return report.total.count === 0 ? exitCode.server : exitCode.ok;
  },
};
