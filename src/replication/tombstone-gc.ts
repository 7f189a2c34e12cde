import type { Clock } from '../platform/clock.js';
import { type BackgroundService, PeriodicTask } from '../platform/periodic.js';
import type { Logger } from 'pino';
import type { ConfirmTombstonesResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { recordWallMs } from '../storage/record-codec.js';
import type { Repository, StoredRecord } from '../storage/repository.js';
import type { LiveMembership } from './live-membership.js';
import type { PeerDirectory } from './peer-directory.js';
import type { PeerLink } from './peer-link.js';

/** Records examined per sweep step, so GC never holds the event loop or a write lock for long. */
export const gcScanRecordsPerStep = 1_000;
/**
 * Most tombstones one step sends to the other members: each is a key (at most 1974 bytes) and a
 * header of under 300 bytes, so a step's messages stay far below the peer message limit.
 */
export const gcTombstonesPerStepMax = 1_000;
/** Bounds of the pause between sweep steps. */
const gcStepMsMin = 200;
const gcStepMsMax = 10_000;

export interface TombstoneGcSettings {
  readonly selfId: string;
  readonly replicationFactor: number;
  readonly graceSeconds: number;
  readonly peerCallMs: number;
}

/**
 * Purges tombstones, by the rule that keeps a purged delete from coming back:
 * **a tombstone is purged only once every replica of its key is known to hold it, and no
 * replication log on any member still holds a write it supersedes.** Its age (older than
 * tombstones.graceSeconds) only makes it a candidate; a timer alone is never the proof.
 *
 * Each tombstone is handled by its key's first replica (the primary; the others never purge on
 * their own), in two steps, with every other member of the cluster:
 * 1. ConfirmTombstones: each replica applies the tombstone (last-writer-wins, durably) and says
 *    whether it now holds exactly it; every member says how old its replication log's oldest
 *    entry is. A member that does not answer (down, partitioned, paused) stops the step: nothing
 *    is purged while any member is out of reach.
 * 2. If every replica holds it and every log's oldest entry is younger than the tombstone's
 *    version (every queued record's version is at least its enqueue time, so none is older than
 *    the tombstone), PurgeTombstones on every other replica, then here: each deletes the key's
 *    record only if it is still exactly that tombstone, and (each by its own view) only if the
 *    key's range is not moving: a stream source never purges what a joiner may have read. Here
 *    last, and only what every other replica purged.
 * A step cut short by a fault leaves some replicas with the tombstone, and this one too: a later
 * step confirms and purges it again (anti-entropy would also copy it back). Records that arrive late for a purged key are refused by the
 * receiver (see peer-service.ts) and never sent late by the sender (see delivery-loop.ts).
 */
export class TombstoneCollector implements BackgroundService {
  private cursor: Buffer | undefined;
  private readonly task: PeriodicTask;
  purged = 0;
  /** Why the last step purged nothing it could have, if it was held back (for Status and logs). */
  lastHoldBack: string | undefined;

  constructor(
    private readonly settings: TombstoneGcSettings,
    /** The ring, read per step: a committed membership change applies to the next. */
    private readonly membership: LiveMembership,
    private readonly repo: Repository,
    /** Members declared dead are not asked (their links are not among the live ones). */
    private readonly peers: PeerDirectory,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {
    const stepMs = Math.min(gcStepMsMax, Math.max(gcStepMsMin, (settings.graceSeconds * 1000) / 8));
    this.task = new PeriodicTask(clock, stepMs, () => this.step(), (err) => logger.warn({ err: (err as Error).message }, 'tombstone GC step failed; it will be retried'));
  }

  start(): void {
    this.task.start();
  }

  stop(): Promise<void> {
    return this.task.stop();
  }

  /** One sweep step; returns tombstones purged on this node. */
  async step(): Promise<number> {
    const { selfId, replicationFactor, graceSeconds } = this.settings;
    const { tombstones, next } = this.repo.tombstonesBefore(this.clock.wallMs() - graceSeconds * 1000, this.cursor, gcScanRecordsPerStep);
    this.cursor = next;
    const view = this.membership.view();
    // The first live replica sweeps a key: a dead first replica would otherwise hold its keys'
    // tombstones for ever. Keys whose owners are changing are left alone until the change is
    // done: a stream page read before a purge and applied after it would bring an older value back.
    const sweeper = (key: Buffer) => view.readRing.preferenceList(key, replicationFactor).find((id) => this.membership.isLive(id));
    const mine = tombstones.filter((t) => sweeper(t.key) === selfId && !view.isMovingHash(view.readRing.hashKey(t.key))).slice(0, gcTombstonesPerStepMax);
    // Describes the last step that had candidates: cleared when one purges all it had.
    if (mine.length === 0) return 0;
    this.lastHoldBack = undefined;
    // Our own log is one of the logs that must hold nothing older.
    let logFloorMs = this.repo.hints.oldestEnqueuedAtMs();
    const replicaOf = mine.map((t) => new Set(view.writeReplicas(t.key)));
    const held = mine.map(() => true);
    // A member declared dead is fenced: it can never deliver a log entry or serve a read again,
    // so neither its copy nor its log holds a purge back (docs/membership.md §2.5).
    const links = this.peers.links();
    for (const link of links) {
      let answer: ConfirmTombstonesResponse;
      try {
        answer = await link.client.confirmTombstones({ fromNodeId: selfId, tombstones: mine }, { signal: this.clock.timeoutSignal(this.settings.peerCallMs) });
      } catch (err) {
        this.lastHoldBack = `${link.id} did not confirm (${(err as Error).message})`;
        this.logger.debug({ peer: link.id, err: (err as Error).message, candidates: mine.length }, 'tombstone purge held back: a member did not answer');
        return 0;
      }
      const oldest = Number(answer.oldestLogEntryUnixMs);
      if (oldest > 0) logFloorMs = logFloorMs === undefined ? oldest : Math.min(logFloorMs, oldest);
      mine.forEach((_, i) => {
        if (replicaOf[i]!.has(link.id) && answer.held[i] !== true) held[i] = false;
      });
    }
    // The confirms took round trips: a membership change may have begun meanwhile, and a joiner
    // may have read these tombstones into a stream page already. Purged now, they would come
    // back on it when it applies the page (a stray tombstone only its own later sweep removes),
    // so a step that saw another epoch purges nothing; the next one decides with the new view.
    if (this.membership.view().epoch !== view.epoch) {
      this.lastHoldBack = `the membership epoch changed during the step (${view.epoch} -> ${this.membership.view().epoch})`;
      return 0;
    }
    const purgeable = mine.filter((t, i) => held[i] && (logFloorMs === undefined || recordWallMs(t.record) < logFloorMs));
    if (purgeable.length < mine.length) this.lastHoldBack = `${mine.length - purgeable.length} of ${mine.length} candidate tombstones not yet held by every replica, or older than a queued log entry`;
    if (purgeable.length === 0) return 0;
    const keptElsewhere = await this.purgeEverywhere(purgeable, links);
    // Ours goes last, and only where every other replica purged: our copy is what a later step
    // starts from, so a replica that kept its copy (a moving range in its view, a failed call)
    // is asked again instead of holding it alone. The moving check again after the purge calls'
    // round trips, here as on every replica (replica.ts).
    const settled = this.membership.view();
    const ours = purgeable.filter((t) => !keptElsewhere.has(t) && !settled.isMovingHash(settled.readRing.hashKey(t.key)));
    const purged = await this.repo.purgeExact(ours.map((t) => ({ key: t.key, header: t.record })));
    if (purged > 0) {
      this.purged += purged;
      this.logger.debug({ purged, total: this.purged }, 'purged tombstones held by every replica');
    }
    return purged;
  }

  /**
   * Step 2 on the other replicas. Returns the tombstones some replica may still hold: those of a
   * call that failed, or of one that purged fewer than it was sent (the answer is a count). We
   * keep ours of those, so a later step confirms and purges them again.
   */
  private async purgeEverywhere(purgeable: readonly StoredRecord[], links: readonly PeerLink[]): Promise<Set<StoredRecord>> {
    const { selfId, peerCallMs } = this.settings;
    const view = this.membership.view();
    const kept = new Set<StoredRecord>();
    await Promise.all(
      links.map(async (link) => {
        const theirs = purgeable.filter((t) => view.writeReplicas(t.key).includes(link.id));
        if (theirs.length === 0) return;
        try {
          const answer = await link.client.purgeTombstones({ fromNodeId: selfId, tombstones: theirs }, { signal: this.clock.timeoutSignal(peerCallMs) });
          if (answer.purged < theirs.length) for (const t of theirs) kept.add(t);
        } catch (err) {
          for (const t of theirs) kept.add(t);
          this.logger.debug({ peer: link.id, err: (err as Error).message }, 'tombstone purge on a replica failed; a later step retries');
        }
      }),
    );
    return kept;
  }
}
