/** T without its falsy members: what waitFor hands back. */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

/** Default ceiling for condition waits in tests. */
export const waitDeadlineMsDefault = 30_000;
/** Poll interval: short, so tests finish as soon as the condition holds. */
const pollMs = 50;

/**
 * Polls `check` until it returns a truthy value (or resolves to one) and returns that value;
 * throws with `what` and the last observation when the deadline passes. Tests wait on
 * conditions, never on fixed sleeps.
 */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, deadlineMs = waitDeadlineMsDefault): Promise<Truthy<T>> {
  const until = Date.now() + deadlineMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Truthy<T>;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
