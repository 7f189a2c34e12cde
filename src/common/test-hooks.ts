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
