import { type Clock, sleep } from '../platform/clock.js';

/** What waits for units (records, bytes) before work goes on: a RateLimiter, or a stand-in in tests. */
export interface Throttle {
  /** Waits until `count` units may go, then takes them; rejects with the signal's reason once `signal` aborts. */
  take(count: number, signal?: AbortSignal): Promise<void>;
}

/**
 * Token bucket in units per second (records for background repair, bytes for range streaming),
 * so background work cannot starve client traffic. Burst is one second's worth.
 */
export class RateLimiter implements Throttle {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly clock: Clock,
  ) {
    this.tokens = perSecond;
    this.last = clock.monotonicMs();
  }

  /**
   * Waits until `count` tokens are available, then takes them (more than one second's worth is
   * taken once the bucket is full). Rejects with the signal's reason, taking nothing, once
   * `signal` aborts.
   */
  async take(count: number, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (signal?.aborted === true) throw signal.reason;
      const now = this.clock.monotonicMs();
      this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
      this.last = now;
      if (this.tokens >= count || (this.tokens >= this.perSecond && count > this.perSecond)) {
        this.tokens -= count;
        return;
      }
      const waitMs = Math.ceil(((Math.min(count, this.perSecond) - this.tokens) / this.perSecond) * 1000);
      await sleep(this.clock, Math.max(1, waitMs), signal);
    }
  }
}
