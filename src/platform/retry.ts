import pRetry from 'p-retry';

export interface RetryOptions {
  /** First delay and cap of the exponential, jittered delay between attempts. */
  readonly minMs: number;
  readonly maxMs: number;
  /** Aborting it ends the wait (and the retrying) with the signal's reason. */
  readonly signal: AbortSignal;
  onFailedAttempt(error: Error, attemptNumber: number): void;
}

/**
 * Retries `attempt` until it succeeds (or `signal` aborts) with exponential (factor 2), jittered,
 * capped backoff. The seam is here because p-retry waits on real timers with Math.random jitter:
 * the simulator supplies its own on simulated time with seeded jitter (src/sim/sim-retry.ts).
 */
export type RetryForever = <T>(attempt: () => Promise<T>, options: RetryOptions) => Promise<T>;

/** The production retry: p-retry. */
export const pRetryForever: RetryForever = (attempt, options) =>
  pRetry(attempt, {
    retries: Number.POSITIVE_INFINITY,
    factor: 2,
    minTimeout: options.minMs,
    maxTimeout: options.maxMs,
    randomize: true,
    signal: options.signal,
    onFailedAttempt: ({ error, attemptNumber }) => options.onFailedAttempt(error, attemptNumber),
  });
