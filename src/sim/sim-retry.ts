import type { Rng } from '../common/rng.js';
import { type Clock, sleep } from '../platform/clock.js';
import type { RetryForever } from '../platform/retry.js';

/**
 * The delivery retry on simulated time: p-retry's policy (factor 2, capped, jitter factor drawn
 * from [1, 2)), with the jitter from the run's seeded generator and the wait on the node's clock.
 */
export function simRetry(clock: Clock, rng: Rng): RetryForever {
  return async (attempt, options) => {
    for (let attemptNumber = 1; ; attemptNumber++) {
      options.signal.throwIfAborted();
      try {
        return await attempt();
      } catch (error) {
        options.onFailedAttempt(error as Error, attemptNumber);
        const delay = Math.min(options.maxMs, options.minMs * 2 ** (attemptNumber - 1) * (1 + rng.nextDouble()));
        await sleep(clock, delay, options.signal);
      }
    }
  };
}
