import type { Logger } from 'pino';
import type { Repository } from '../storage/repository.js';

/** Records examined per sweep step, so GC never holds the event loop or a write lock for long. */
export const gcScanRecordsPerStep = 2_000;
/** Bounds of the pause between sweep steps. */
const gcStepMsMin = 200;
const gcStepMsMax = 10_000;

/**
 * Purges tombstones older than tombstones.graceSeconds. A tombstone is purged only when
 * (1) its version is older than the grace period, and (2) this node's own replication log holds
 * no entry older than it (every write this node coordinated up to then has reached its
 * replicas, or was dropped by the log's age cap, which is never longer than the grace).
 * Why no deleted key comes back: see StaleNodeGuard and docs/design-notes.md.
 */
export class TombstoneCollector {
  private timer: NodeJS.Timeout | undefined;
  private cursor: Buffer | undefined;
  private stopped = false;
  purged = 0;

  constructor(
    private readonly repo: Repository,
    private readonly graceSeconds: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const stepMs = Math.min(gcStepMsMax, Math.max(gcStepMsMin, (this.graceSeconds * 1000) / 8));
    const tick = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => void this.step().finally(tick), stepMs);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One sweep step; returns tombstones purged. */
  async step(): Promise<number> {
    let cutoffMs = Date.now() - this.graceSeconds * 1000;
    for (const peer of this.repo.hints.peers()) {
      const oldest = this.repo.hints.stats(peer).oldestEnqueuedAtMs;
      if (oldest !== undefined) cutoffMs = Math.min(cutoffMs, oldest);
    }
    const { cursor, purged } = await this.repo.purgeTombstones(cutoffMs, this.cursor, gcScanRecordsPerStep);
    this.cursor = cursor;
    if (purged > 0) {
      this.purged += purged;
      this.logger.debug({ purged, total: this.purged }, 'purged tombstones past their grace period');
    }
    return purged;
  }
}
