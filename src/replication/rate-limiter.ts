/**
 * Token bucket in records per second, so background repair cannot starve client traffic.
 * Burst is one second's worth.
 */
export class RateLimiter {
  private tokens: number;
  private last = Date.now();

  constructor(private readonly perSecond: number) {
    this.tokens = perSecond;
  }

  /** Waits until `count` tokens are available, then takes them. */
  async take(count: number): Promise<void> {
    for (;;) {
      const now = Date.now();
      this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
      this.last = now;
      if (this.tokens >= count || (this.tokens >= this.perSecond && count > this.perSecond)) {
        this.tokens -= count;
        return;
      }
      const waitMs = Math.ceil(((Math.min(count, this.perSecond) - this.tokens) / this.perSecond) * 1000);
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, waitMs)));
    }
  }
}
