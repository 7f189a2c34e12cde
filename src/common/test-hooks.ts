import { randomInt } from 'node:crypto';
import { Rng } from './rng.js';

/**
 * Test hooks for fault-injection tests, read once from the environment when a node starts.
 * Unset (as in production), each has no effect. Every hook is named KVSTORE_TEST_* and listed
 * in docs/testing.md.
 */

/** Largest offset the clock hook accepts: a year either way is beyond any test's interest. */
const clockOffsetMsMax = 365 * 24 * 3600 * 1000;

/**
 * KVSTORE_TEST_CLOCK_OFFSET_MS: milliseconds added to this node's wall clock (negative: behind),
 * as a machine whose clock is wrong would see it. Affects everything the node reads the time for
 * (version stamps, log entry ages, tombstone ages), not timers.
 */
export function testClockOffsetMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.KVSTORE_TEST_CLOCK_OFFSET_MS;
  if (raw === undefined || raw === '') return 0;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || Math.abs(ms) > clockOffsetMsMax) {
    throw new Error(`KVSTORE_TEST_CLOCK_OFFSET_MS must be an integer number of milliseconds within ±${clockOffsetMsMax}, got "${raw}"`);
  }
  return ms;
}

/** The node's wall clock: Date.now, shifted by KVSTORE_TEST_CLOCK_OFFSET_MS when set. */
export function nodeWallClock(env: NodeJS.ProcessEnv = process.env): () => number {
  const offset = testClockOffsetMs(env);
  return offset === 0 ? Date.now : () => Date.now() + offset;
}

/** Largest failure rate KVSTORE_TEST_STORAGE_FAULTS accepts: past it a node does little but fail. */
const storageFaultRateMax = 0.5;

/** What KVSTORE_TEST_STORAGE_FAULTS asks for (the repository's StorageFaults, with its settings). */
export interface TestStorageFaults {
  readonly jobRate: number;
  readonly commitRate: number;
  readonly seed: number;
  failJob(): boolean;
  failCommit(): boolean;
}

/**
 * KVSTORE_TEST_STORAGE_FAULTS, e.g. `job=0.05,commit=0.02,seed=7`: each write job of a group
 * commit fails with probability `job` (rolled back alone, as an LMDB error midway through it
 * would be), each group commit with probability `commit` (every job in it fails and nothing
 * changes, as on a full disk); draws from a generator seeded with `seed` (default: random; the
 * node logs it). The simulator's StorageFaults seam, for real processes: both of LMDB's commit
 * paths, the write thread's included. Undefined when unset.
 */
export function testStorageFaults(env: NodeJS.ProcessEnv = process.env): TestStorageFaults | undefined {
  const raw = env.KVSTORE_TEST_STORAGE_FAULTS;
  if (raw === undefined || raw === '') return undefined;
  const refuse = (why: string): never => {
    throw new Error(`KVSTORE_TEST_STORAGE_FAULTS must look like "job=0.05,commit=0.02,seed=7" (rates from 0 to ${storageFaultRateMax}, an integer seed): ${why}, got "${raw}"`);
  };
  const settings = new Map<string, number>();
  for (const part of raw.split(',')) {
    const [name, value, extra] = part.trim().split('=');
    if (name === undefined || value === undefined || extra !== undefined || !['job', 'commit', 'seed'].includes(name)) refuse(`"${part}" is not job=, commit= or seed=`);
    if (settings.has(name!)) refuse(`${name} given twice`);
    const n = value === '' ? Number.NaN : Number(value);
    if (name === 'seed' ? !Number.isInteger(n) : !(n >= 0 && n <= storageFaultRateMax)) refuse(`${name}=${value} is out of range`);
    settings.set(name!, n);
  }
  const jobRate = settings.get('job') ?? 0;
  const commitRate = settings.get('commit') ?? 0;
  if (jobRate === 0 && commitRate === 0) refuse('neither job nor commit fails');
  const seed = settings.get('seed') ?? randomInt(2 ** 31);
  const rng = new Rng(seed);
  return { jobRate, commitRate, seed, failJob: () => jobRate > 0 && rng.nextDouble() < jobRate, failCommit: () => commitRate > 0 && rng.nextDouble() < commitRate };
}
