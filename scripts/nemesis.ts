/**
 * The nemesis at length: `npm run nemesis -- --duration <s> --seed <n> [--clients <n>]`.
 * Same harness as test/cluster/nemesis.test.ts (test/helpers/nemesis/); prints the seed, the
 * summary and every violation, and exits 1 on any violation (0 when the history checks out).
 * docs/testing.md describes what it does and checks.
 */
import { parseArgs } from 'node:util';
import { NemesisRun, nemesisSeed } from '../test/helpers/nemesis/harness.js';

const usage = `Usage: npm run nemesis -- [--duration <seconds>] [--seed <n>] [--clients <n>]
                         [--ops-per-client <n>] [--grace <s>] [--history <file.jsonl>] [--keep] [--strict-indeterminate]
  --duration        seconds of workload and faults (default 120)
  --seed            schedule seed (default: KVSTORE_TEST_SEED, else random; printed either way)
  --clients         concurrent clients, a third per workload (default 120)
  --ops-per-client  cap on one client's operations (default: 50 per second of duration)
  --grace           the nodes' tombstones.graceSeconds (default 3600: nothing purged during the
                    run; e.g. 30 purges tombstones while the faults run)
  --history         write every operation, fault and unasked exit as JSON lines to this file
  --keep            keep the cluster's temp dir (configs, LMDB data dirs) for inspection
  --strict-indeterminate  also count "an indeterminate write took effect after a later
                    acknowledged one" as a violation (by default an allowed anomaly, listed)
Exit codes: 0 no violation, 1 violations found, 2 usage error, 3 the harness itself failed.`;

async function main(): Promise<number> {
  // node:util parseArgs rather than commander (src/cli/cli-program.ts): one command, no
  // subcommands, a hand-written usage with the defaults; strict, it rejects unknown flags and
  // positionals, reported as kvstore's and kvctl's are ("nemesis: <problem>", the usage, exit 2).
  let values;
  try {
    values = parseArgs({
      options: {
        duration: { type: 'string' },
        seed: { type: 'string' },
        clients: { type: 'string' },
        'ops-per-client': { type: 'string' },
        history: { type: 'string' },
        keep: { type: 'boolean' },
        'strict-indeterminate': { type: 'boolean' },
        grace: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`nemesis: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got "${raw}"`);
    return n;
  };
  let seed: number, durationS: number, clients: number, opsPerClient: number, graceSeconds: number;
  try {
    seed = values.seed !== undefined ? int('seed', values.seed, 0, 0) : nemesisSeed();
    durationS = int('duration', values.duration, 120, 5);
    clients = int('clients', values.clients, 120, 3);
    opsPerClient = int('ops-per-client', values['ops-per-client'], 50 * durationS, 1);
    graceSeconds = int('grace', values.grace, 3600, 10);
  } catch (err) {
    process.stderr.write(`nemesis: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  const run = new NemesisRun({
    seed,
    durationMs: durationS * 1000,
    clients,
    opsPerClientMax: opsPerClient,
    historyFile: values.history,
    keepDir: values.keep === true,
    lateIsViolation: values['strict-indeterminate'] === true,
    graceSeconds,
  });
  const stop = () => {
    process.stderr.write('nemesis: interrupted, stopping the cluster\n');
    void run.cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const result = await run.execute();
    console.log('');
    console.log(result.summary);
    if (result.violations.length > 0 || result.anomalies.length > 0) console.log(`\n${result.report}`);
    if (values.keep) console.log(`cluster dir kept: ${result.dir}`);
    if (values.history !== undefined) console.log(`history written to ${values.history}`);
    console.log(result.violations.length === 0 ? 'nemesis: no violations' : `nemesis: ${result.violations.length} violations (replay with KVSTORE_TEST_SEED=${seed})`);
    return result.violations.length === 0 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`nemesis: the harness failed: ${(err as Error).stack ?? String(err)}\n(replay with KVSTORE_TEST_SEED=${seed})\n`);
    return 3;
  } finally {
    await run.cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`nemesis: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(3);
  },
);
