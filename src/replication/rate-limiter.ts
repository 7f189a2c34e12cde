import { type Clock, sleep } from '../platform/clock.js';

/**
 * Token bucket in records per second, so background repair cannot starve client traffic.
 * Burst is one second's worth.
 */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly clock: Clock,
  ) {
    this.tokens = perSecond;
    this.last = clock.monotonicMs();
  }

  /** Waits until `count` tokens are available, then takes them. */
  async take(count: number): Promise<void> {
    for (;;) {
      const now = this.clock.monotonicMs();
      this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
      this.last = now;
      if (this.tokens >= count || (this.tokens >= this.perSecond && count > this.perSecond)) {
        this.tokens -= count;
        return;
      }
      const waitMs = Math.ceil(((Math.min(count, this.perSecond) - this.tokens) / this.perSecond) * 1000);
      await sleep(this.clock, Math.max(1, waitMs));
    }
  }
}
