import type { Logger } from 'pino';
import type { Repository } from '../storage/repository.js';
import { QuarantinedError } from './errors.js';
import type { PeerLink } from './peer-link.js';

/** How often cluster contact is checked and persisted. */
export const contactCheckMs = 1_000;

/**
 * The rule that keeps purged deletes from coming back: **a node that has had no contact with any
 * peer for longer than tombstones.graceSeconds (down, or partitioned away) must be wiped before
 * it rejoins.** Its copies may predate deletes whose tombstones the others have since purged,
 * so nothing it holds may flow back. Enforced here:
 * - at start, if the persisted last contact is older than the grace (or the dir was quarantined),
 *   the node refuses to start (unless an operator overrides after a whole-cluster outage);
 * - while running, once isolated longer than the grace the node quarantines itself: persists
 *   the fact, stops replicating and anti-entropy, and answers FAILED_PRECONDITION to clients and
 *   to peers asking for its data. Wiping its dataDir and restarting makes it a fresh, empty
 *   replica that anti-entropy fills from the others.
 * Replication-log entries are capped at the same age, so no log can carry a pre-delete value
 * past the grace either.
 */
export class StaleNodeGuard {
  private timer: NodeJS.Timeout | undefined;
  private lastPersistedMs = 0;
  private lastContactMs: number;
  quarantined: string | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly links: readonly PeerLink[],
    private readonly graceSeconds: number,
    private readonly onQuarantine: (reason: string) => void,
    private readonly logger: Logger,
  ) {
    // A first start counts as contact: a node that can never reach a peer is quarantined after the grace.
    this.lastContactMs = repo.clusterContactMs() ?? Date.now();
    this.quarantined = repo.quarantineReason();
  }

  /** Starts the contact history afresh (after an operator override). */
  reset(): void {
    this.quarantined = undefined;
    this.lastContactMs = Date.now();
  }

  /** Why this data dir must not serve (checked at start), or undefined. */
  startProblem(): string | undefined {
    if (this.links.length === 0) return undefined;
    if (this.quarantined !== undefined) return this.quarantined;
    const awayMs = Date.now() - this.lastContactMs;
    if (awayMs > this.graceSeconds * 1000) {
      return `this node has had no contact with the cluster for ${Math.round(awayMs / 1000)} s, longer than tombstones.graceSeconds (${this.graceSeconds} s): its data may predate purged deletes`;
    }
    return undefined;
  }

  start(): void {
    if (this.links.length === 0) return;
    this.repo.setClusterContactMs(this.lastContactMs);
    this.timer = setInterval(() => this.check(), contactCheckMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Throws QuarantinedError if this node must not serve or export data. */
  assertServing(): void {
    if (this.quarantined !== undefined) throw new QuarantinedError(`${this.quarantined}; wipe this node's dataDir and restart it, anti-entropy will restore it`);
  }

  private check(): void {
    if (this.quarantined !== undefined) return;
    const now = Date.now();
    for (const link of this.links) if (link.reachable && link.lastContactMs > this.lastContactMs) this.lastContactMs = link.lastContactMs;
    if (this.lastContactMs - this.lastPersistedMs >= 5 * contactCheckMs) {
      this.repo.setClusterContactMs(this.lastContactMs);
      this.lastPersistedMs = this.lastContactMs;
    }
    if (now - this.lastContactMs > this.graceSeconds * 1000) {
      const reason = `node quarantined: no contact with any peer since ${new Date(this.lastContactMs).toISOString()}, longer than tombstones.graceSeconds (${this.graceSeconds} s)`;
      this.quarantined = reason;
      this.logger.error(reason);
      void this.repo.setQuarantined(reason);
      this.onQuarantine(reason);
    }
  }
}
