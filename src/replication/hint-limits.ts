import type { Clock } from '../platform/clock.js';
import { type BackgroundService, PeriodicTask } from '../platform/periodic.js';
import type { Logger } from 'pino';
import type { HintEntry, HintLog } from '../storage/hint-log.js';

/** How often the replication-log limits are enforced. */
export const hintLimitCheckMs = 1_000;
/** Entries examined per step while trimming, so one check never holds the event loop long. */
const trimBatchEntries = 1_024;

export interface HintLimitSettings {
  /** Entries older than this are dropped; 0: no age limit. */
  readonly maxAgeSeconds: number;
  /** Oldest entries are dropped while a peer's log is larger; 0: no size limit. */
  readonly maxBytesPerPeer: number;
}

/**
 * Enforces hints.maxAgeSeconds and hints.maxBytesPerPeer: past them the oldest entries for a peer
 * are dropped (a warning with the count, and the per-peer dropped counter in Status). The peer
 * then misses those writes until anti-entropy copies them, which is what bounds the log when a
 * peer stays away for long.
 */
export class HintLimits implements BackgroundService {
  private readonly task: PeriodicTask;

  constructor(
    private readonly log: HintLog,
    private readonly settings: HintLimitSettings,
    private readonly logger: Logger,
    /** This node's clock (its wall time is the one entries' enqueue times were read from). */
    private readonly clock: Clock,
  ) {
    this.task = new PeriodicTask(clock, hintLimitCheckMs, () => void this.enforce(), (err) => logger.error({ err }, 'replication log limit check failed'));
  }

  start(): void {
    if (this.settings.maxAgeSeconds === 0 && this.settings.maxBytesPerPeer === 0) return;
    this.task.start();
  }

  stop(): Promise<void> {
    return this.task.stop();
  }

  /** Drops what is over the limits now; returns the entries dropped per peer. */
  enforce(): Map<string, number> {
    const dropped = new Map<string, number>();
    const cutoffMs = this.settings.maxAgeSeconds > 0 ? this.clock.wallMs() - this.settings.maxAgeSeconds * 1000 : undefined;
    for (const peer of this.log.peers()) {
      let count = 0;
      for (;;) {
        const stats = this.log.stats(peer);
        if (stats.entries === 0) break;
        const overBytes = this.settings.maxBytesPerPeer > 0 ? stats.bytes - this.settings.maxBytesPerPeer : 0;
        const tooOld = cutoffMs !== undefined && stats.oldestEnqueuedAtMs !== undefined && stats.oldestEnqueuedAtMs < cutoffMs;
        if (overBytes <= 0 && !tooOld) break;
        const batch = this.log.read(peer, 0, trimBatchEntries, Number.MAX_SAFE_INTEGER);
        const victims: HintEntry[] = [];
        let freed = 0;
        for (const e of batch) {
          const old = cutoffMs !== undefined && e.enqueuedAtMs < cutoffMs;
          if (!old && freed >= overBytes) break;
          victims.push(e);
          freed += e.bytes;
        }
        if (victims.length === 0) break;
        this.log.remove(victims, true);
        count += victims.length;
      }
      if (count > 0) {
        dropped.set(peer, count);
        this.logger.warn({ peer, dropped: count, ...this.settings }, 'replication log over its limits: dropped the oldest entries; anti-entropy will repair the peer');
      }
    }
    return dropped;
  }
}
