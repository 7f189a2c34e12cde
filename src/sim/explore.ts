/**
 * `npm run sim -- [--seeds <n>] [--from <seed>] [--seed <seed>] [--duration <ms>]`: explores
 * seeds of the deterministic simulation (simulation.ts). For each: one line; at the end the
 * simulated cluster-seconds per wall second. On a failing seed: its violations, the command that
 * replays it, and the shortest prefix of its fault schedule that still fails (found by bisection,
 * each probe a full deterministic run). Exit 0: every seed passed; 1: a seed failed; 2: usage.
 */
import { parseArgs } from 'node:util';
import { isEntryPoint } from '../common/entry-point.js';
import { runSimulation, type SimulationOptions, type SimulationResult } from './simulation.js';

const usage = `Usage: npm run sim -- [--seeds <n>] [--from <seed>] [--seed <seed>] [--duration <ms>] [--nodes <n>] [--allow-late-strays] [--slow-streaming]
  --seeds     how many seeds to explore (default 100), from --from (default 1)
  --seed      run this one seed only, printing its fault trace (a replay)
  --duration  simulated milliseconds of load and faults per seed (default 20000)
  --nodes     cluster size (default 3)
  --allow-late-strays  records left on a member that lost their key after its cleanup are counted,
              their holders restarted, then checked (default: violations at once)
  --slow-streaming  streaming throttled to 4 KB/s, one range at a time: a membership change stays
              pending for seconds, so more operations and faults meet its dual quorum
Exit codes: 0 every seed passed, 1 a seed failed, 2 usage error.`;

/** Largest seed accepted: the generators take 32-bit seeds. */
const seedMax = 2 ** 31 - 1;

function positive(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > seedMax) throw new UsageError(`--${name} must be an integer from ${min} to ${seedMax}, got "${raw}"`);
  return n;
}

class UsageError extends Error {}

const failed = (r: SimulationResult) => r.violations.length > 0;

/** The shortest prefix of the seed's fault schedule that still fails (bisection over step counts). */
export async function shortestFailingPrefix(options: SimulationOptions, steps: number): Promise<{ steps: number; result: SimulationResult }> {
  let lo = 0;
  let hi = steps;
  let best = await runSimulation({ ...options, faultSteps: hi });
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const probe = await runSimulation({ ...options, faultSteps: mid });
    if (failed(probe)) {
      hi = mid;
      best = probe;
    } else lo = mid + 1;
  }
  return { steps: hi, result: best };
}

function report(r: SimulationResult): string {
  return `seed ${r.seed}: ${failed(r) ? 'FAILED' : 'ok'}  ${r.ops} ops (${r.opsAcked} acknowledged), ${r.trace.length} fault steps, ${(r.simulatedMs / 1000).toFixed(1)} s simulated, ${r.events} events, ${r.anomalies.length} anomalies, ${r.tombstonesPurged} tombstones purged${membershipReport(r)}`;
}

/** The membership steps' outcome, when the seed drew any. */
export function membershipReport(r: SimulationResult): string {
  const m = r.membership;
  const parts: string[] = [];
  if (m.markDeadOf !== undefined) {
    parts.push(`mark-dead ${m.markDeadOf} (${m.markDeadHow}) ${m.markDeadCommitted ? 'committed' : 'not committed'} after ${m.markDeadAttempts} attempt${m.markDeadAttempts === 1 ? '' : 's'}${m.deadMemberRan ? ', ran again dead' : ''}`);
  }
  const c = m.change;
  if (c !== undefined) {
    const outcome = c.committed.length === 0 && !c.completed ? 'not started' : c.completed ? (c.cancelled ? 'cancelled' : 'done') : 'NOT finished';
    parts.push(`change ${c.plan}${c.target === undefined ? '' : ` (${c.target})`}: ${c.committed.length === 0 ? 'nothing committed' : `committed ${c.committed.join(', ')}`}${c.refused.length === 0 ? '' : `, refused ${c.refused.join(', ')}`} after ${c.attempts} attempts, ${outcome}, members ${c.finalMembers.join(' ')}, ${c.opsViaSpareAcked} ops acknowledged via ${c.spare}, ${c.cleanedUp} cleaned up${c.straysAfterFirstCleanup > 0 ? `, ${c.straysAfterFirstCleanup} late strays (holders restarted)` : ''}`);
  }
  const p = m.aliveProbes;
  if (p.issued + p.skipped > 0) parts.push(p.issued === 0 ? 'live mark-dead skipped' : `live mark-dead ${p.refusedNotDead > 0 ? 'refused' : 'not refused as alive'}`);
  return parts.length === 0 ? '' : `; membership: ${parts.join(', ')}, epoch ${m.finalEpoch}`;
}

export async function main(argv: readonly string[]): Promise<number> {
  // node:util parseArgs rather than commander (src/cli/cli-program.ts): one command, no
  // subcommands, a hand-written usage with the defaults; strict, it rejects unknown flags and
  // positionals. Usage errors are reported as kvstore's and kvctl's are: "sim: <problem>", the
  // usage, exit 2.
  let values;
  try {
    values = parseArgs({ args: [...argv], options: { seeds: { type: 'string' }, from: { type: 'string' }, seed: { type: 'string' }, duration: { type: 'string' }, nodes: { type: 'string' }, 'allow-late-strays': { type: 'boolean' }, 'slow-streaming': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    console.error(`sim: ${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (values.help === true) {
    console.log(usage);
    return 0;
  }
  let seeds: number[];
  let base: Omit<SimulationOptions, 'seed'>;
  try {
    const durationMs = positive('duration', values.duration, 20_000, 1000);
    const nodes = positive('nodes', values.nodes, 3, 3);
    base = { durationMs, nodes, ...(values['allow-late-strays'] === true ? { lateStraysAllowed: true } : {}), ...(values['slow-streaming'] === true ? { slowStreaming: true } : {}) };
    if (values.seed !== undefined) seeds = [positive('seed', values.seed, 1, 0)];
    else {
      const from = positive('from', values.from, 1, 0);
      seeds = Array.from({ length: positive('seeds', values.seeds, 100) }, (_, i) => from + i);
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`sim: ${err.message}\n${usage}`);
    return 2;
  }
  const started = performance.now();
  let simulatedMs = 0;
  for (const [i, seed] of seeds.entries()) {
    const result = await runSimulation({ ...base, seed });
    simulatedMs += result.simulatedMs;
    console.log(`[${i + 1}/${seeds.length}] ${report(result)}`);
    if (seeds.length === 1) {
      for (const line of result.trace) console.log(`  fault: ${line}`);
      for (const line of result.membership.log) console.log(`  membership: ${line}`);
    }
    if (failed(result)) {
      for (const v of result.violations.slice(0, 10)) {
        console.log(`  ${v.kind}: ${v.message}`);
        for (const d of v.details.slice(0, 12)) console.log(`    ${d}`);
      }
      console.log(`replay: npm run sim -- --seed ${seed} --duration ${base.durationMs} --nodes ${base.nodes}${base.lateStraysAllowed === true ? ' --allow-late-strays' : ''}${base.slowStreaming === true ? ' --slow-streaming' : ''}`);
      console.log('finding the shortest failing prefix of the fault schedule...');
      const shortest = await shortestFailingPrefix({ ...base, seed }, result.trace.length);
      console.log(`shortest failing prefix: the first ${shortest.steps} of ${result.trace.length} fault steps:`);
      for (const line of shortest.result.trace) console.log(`  fault: ${line}`);
      for (const v of shortest.result.violations.slice(0, 3)) console.log(`  ${v.kind}: ${v.message}`);
      return 1;
    }
  }
  const wallS = (performance.now() - started) / 1000;
  const clusterSeconds = (simulatedMs / 1000) * (base.nodes ?? 3);
  console.log(`${seeds.length} seeds passed in ${wallS.toFixed(1)} s: ${(clusterSeconds / wallS).toFixed(0)} simulated node-seconds per wall second (${(simulatedMs / 1000 / wallS).toFixed(0)} cluster-seconds per wall second)`);
  return 0;
}

if (isEntryPoint(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(3);
    },
  );
}
