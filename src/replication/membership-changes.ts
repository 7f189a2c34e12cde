import type { Logger } from 'pino';
import type { StreamProgress } from '../../gen/kvstore/internal/v1/peer.js';
import { advanceChange, describeChange, type MembershipState } from '../cluster/membership.js';
import { planTransfers, type Transfer } from '../cluster/transfer-plan.js';
import type { Clock } from '../platform/clock.js';
import { type BackgroundService, PeriodicTask } from '../platform/periodic.js';
import type { Repository } from '../storage/repository.js';
import type { LiveMembership } from './live-membership.js';
import type { PeerDirectory } from './peer-directory.js';
import type { MembershipProposer } from './membership-proposer.js';
import { decodeTransferCursor } from './range-streamer.js';
import { retargetLogEntries } from './log-retarget.js';

/** Keys the cleanup after a change checks (and deletes if no longer owned) per transaction. */
export const cleanupKeysPerPage = 1000;
/** Pages of cleanup per step: 10,000 keys every poll, so a million-key node is clean in under a minute. */
export const cleanupPagesPerStep = 10;

/** The receiving side of one change on this node (a RangeStreamer, or a stand-in in tests). */
export interface ChangeReceiver {
  start(): void;
  stop(): Promise<void>;
  progress(): { readonly done: number; readonly total: number; readonly keys: number; readonly bytes: number; readonly complete: boolean };
}

export interface MembershipChangesDeps {
  readonly selfId: string;
  readonly live: LiveMembership;
  readonly peers: PeerDirectory;
  readonly repo: Repository;
  readonly proposer: MembershipProposer;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly vnodesPerMember: number;
  readonly peerCallMs: number;
  /** How often the change in progress is looked at (drain barrier, streaming, the next step). */
  readonly pollMs: number;
  /** Deadline of one agreement step the driver proposes. */
  readonly stepMs: number;
  /** Builds the receiver of this node's transfers of change `changeId`. */
  receiver(changeId: number, epoch: number, transfers: readonly Transfer[]): ChangeReceiver;
}

/**
 * Carries a membership change through its phases (docs/membership.md §3, §4.1) on every node:
 * - as a **receiver** (a member that gains ranges): once every live member has drained the
 *   pending epoch (no write routed by the old ring alone can still be acknowledged), streams the
 *   ranges it gains from their current owners, resuming from persisted cursors after a restart;
 * - as the **driver** (the lowest-id live member that is normal in both rings, so a driver that
 *   dies is replaced by the next once it is declared dead): once every receiver reports its
 *   ranges complete, proposes the switch of reads to the new ring, then the end of the change;
 * - as a **loser**, once the change is over: deletes the records it no longer holds a replica of.
 */
export class MembershipChanges implements BackgroundService {
  private readonly task: PeriodicTask;
  /** The receiver of the change in progress, and the dead members its transfers were planned with. */
  private receiving: { readonly changeId: number; readonly receiver: ChangeReceiver; readonly dead: string } | undefined;
  /** The drain barrier passed for this change id (every live member drained its pending epoch). */
  private drainedFor = 0;
  /** This node re-targeted its log entries for this change id (log-retarget.ts); in memory: redone after a restart. */
  private retargetedFor = 0;
  /** Cleanup cursor: the last key checked; undefined when no cleanup is due. */
  private cleanupAfter: Buffer | undefined;
  cleanedUp = 0;
  /** Log entries copied to gainers (queued or applied here) since start, over every change. */
  retargetedCopies = 0;
  /** What the receivers last reported, as the driver polls them (for Status on the driver). */
  private readonly reported = new Map<string, StreamProgress>();

  constructor(private readonly deps: MembershipChangesDeps) {
    this.task = new PeriodicTask(deps.clock, deps.pollMs, () => this.step(), (err) => deps.logger.warn({ err: (err as Error).message }, 'membership change step failed; it will be retried'));
    deps.live.onChange((state, previous) => {
      // A change just ended, or this node caught up past one it did not see end.
      if (state.change === undefined && (previous.change !== undefined || (state.lastChangeId ?? 0) !== (previous.lastChangeId ?? 0))) this.cleanupAfter = Buffer.alloc(0);
    });
    // A node that restarts after a change may have been stopped mid-cleanup.
    const state = deps.live.current();
    if (state.change === undefined && (state.lastChangeId ?? 0) > 0) this.cleanupAfter = Buffer.alloc(0);
  }

  start(): void {
    this.task.start();
  }

  async stop(): Promise<void> {
    await this.task.stop();
    await this.receiving?.receiver.stop();
  }

  /**
   * The drain barrier as this node reports it (Ping.drained_epoch): no write planned before the
   * epoch is still running here, and, for the change in progress, this node's log entries for
   * the members losing ranges were re-targeted to the gainers. Streaming starts only once every
   * live member reports the change's epoch, so no gainer streams before every copy is queued.
   */
  drainedEpoch(): number {
    const drained = this.deps.live.drainedEpoch();
    const state = this.deps.live.current();
    if (state.change?.phase !== 'pending' || this.retargetedFor === state.change.id) return drained;
    return Math.min(drained, state.epoch - 1);
  }

  /** What this node received of the change in progress (Ping answers it to the driver). */
  progress(): StreamProgress | undefined {
    const change = this.deps.live.current().change;
    if (change === undefined) return undefined;
    if (this.receiving?.changeId !== change.id) {
      // Not streaming (yet, or again after a restart): what the persisted cursors hold.
      const mine = this.myTransfers(this.deps.live.current());
      const { keys, bytes } = this.persistedProgress(change.id);
      return { changeId: BigInt(change.id), transfersTotal: mine.length, transfersDone: 0, keys: BigInt(keys), bytes: BigInt(bytes), complete: mine.length === 0 };
    }
    const p = this.receiving.receiver.progress();
    return { changeId: BigInt(change.id), transfersTotal: p.total, transfersDone: p.done, keys: BigInt(p.keys), bytes: BigInt(p.bytes), complete: p.complete };
  }

  /**
   * The change in progress as this node sees it, with the receivers' progress it knows of (its
   * own, and as driver every receiver's): for Status and `kvctl member add`'s progress bar.
   */
  describe(): { text: string; transfersDone: number; transfersTotal: number; keys: number; bytes: number } | undefined {
    const state = this.deps.live.current();
    const change = state.change;
    if (change === undefined) return undefined;
    const own = this.progress();
    const all = new Map(this.reported);
    if (own !== undefined && own.transfersTotal > 0) all.set(this.deps.selfId, own);
    let transfersDone = 0;
    let transfersTotal = 0;
    let keys = 0;
    let bytes = 0;
    for (const p of all.values()) {
      if (Number(p.changeId) !== change.id) continue;
      transfersDone += p.transfersDone;
      transfersTotal += p.transfersTotal;
      keys += Number(p.keys);
      bytes += Number(p.bytes);
    }
    const streaming = transfersTotal > 0 ? `, streaming ${transfersDone}/${transfersTotal} ranges, ${keys} keys` : change.phase === 'pending' ? ', waiting for the drain barrier or the receivers' : '';
    return { text: `${describeChange(state, change)}${streaming}`, transfersDone, transfersTotal, keys, bytes };
  }

  /** One look at the change in progress (or the cleanup after one). */
  async step(): Promise<void> {
    const state = this.deps.live.current();
    if (this.deps.live.isUnjoined) return;
    if (state.change === undefined) {
      await this.receiving?.receiver.stop();
      this.receiving = undefined;
      await this.cleanupStep();
      return;
    }
    await this.retarget(state);
    await this.receive(state);
    await this.drive(state);
  }

  /** Keys and bytes received of change `changeId`, as its durable cursors say. */
  private persistedProgress(changeId: number): { keys: number; bytes: number } {
    let keys = 0;
    let bytes = 0;
    for (const name of this.deps.repo.transferCursorNames(`${changeId}/`)) {
      const stored = this.deps.repo.transferCursor(name);
      if (stored === undefined) continue;
      try {
        const cursor = decodeTransferCursor(stored);
        keys += cursor.keys;
        bytes += cursor.bytes;
      } catch {
        // An unreadable cursor restarts its stream (range-streamer.ts); it counts for nothing here.
      }
    }
    return { keys, bytes };
  }

  private myTransfers(state: MembershipState): Transfer[] {
    const dead = new Set(state.members.filter((m) => m.dead === true).map((m) => m.id));
    return planTransfers(state, this.deps.live.view(), this.deps.vnodesPerMember, dead).filter((t) => t.receiver === this.deps.selfId);
  }

  /** Once this node drained the change's epoch: re-targets its log entries for the losers (once per change and start). */
  private async retarget(state: MembershipState): Promise<void> {
    const change = state.change!;
    if (change.phase !== 'pending' || this.retargetedFor === change.id || this.deps.live.drainedEpoch() < state.epoch) return;
    const dead = new Set(state.members.filter((m) => m.dead === true).map((m) => m.id));
    const view = this.deps.live.view();
    if (view.epoch !== state.epoch) return; // adopted meanwhile: the next step looks again
    const outcome = await retargetLogEntries(this.deps.repo, view, this.deps.selfId, dead, (peer) => this.deps.peers.loop(peer)?.wake());
    this.retargetedFor = change.id;
    this.retargetedCopies += outcome.copies + outcome.applied;
    if (outcome.entries > 0) this.deps.logger.info({ change: change.id, ...outcome }, `replication-log entries for members losing ranges re-targeted to the gainers: ${outcome.copies} copies queued, ${outcome.applied} applied here`);
  }

  private async receive(state: MembershipState): Promise<void> {
    const change = state.change!;
    const dead = deadMembersOf(state);
    if (this.receiving?.changeId === change.id) {
      if (this.receiving.dead === dead) return;
      // A source was declared dead mid-stream: a transfer whose primary it was completes only
      // from its fallbacks now, so plan again. The persisted cursors make the new receiver resume.
      await this.receiving.receiver.stop();
      this.receiving = undefined;
      this.deps.logger.warn({ change: change.id, dead }, 'a member was declared dead during the change: streaming planned again without it (resuming from the cursors)');
    }
    const transfers = this.myTransfers(state);
    if (transfers.length === 0) return;
    // Cursors of this change exist only once its barrier was passed (before a restart).
    if (this.drainedFor !== change.id && this.deps.repo.transferCursorNames(`${change.id}/`).length > 0) this.drainedFor = change.id;
    if (this.drainedFor !== change.id) {
      if (!(await this.everyoneDrained(state.epoch))) return;
      this.drainedFor = change.id;
    }
    const receiver = this.deps.receiver(change.id, state.epoch, transfers);
    this.receiving = { changeId: change.id, receiver, dead };
    receiver.start();
    this.deps.logger.info({ change: change.id, transfers: transfers.length }, `streaming ${transfers.length} ranges for ${describeChange(state, change)}`);
  }

  /** Whether every live member (this node included) has no write still running that was planned before `epoch`. */
  private async everyoneDrained(epoch: number): Promise<boolean> {
    if (this.drainedEpoch() < epoch) return false;
    const { selfId, peerCallMs, clock } = this.deps;
    const answers = await Promise.allSettled(this.deps.peers.links().map((l) => l.client.ping({ fromNodeId: selfId }, { signal: clock.timeoutSignal(peerCallMs) })));
    return answers.every((a) => a.status === 'fulfilled' && Number(a.value.drainedEpoch) >= epoch);
  }

  /** The driver: the lowest-id live member that is normal in both rings. */
  private driverOf(state: MembershipState): string | undefined {
    return state.members.find((m) => m.state === 'normal' && m.dead !== true)?.id;
  }

  private async drive(state: MembershipState): Promise<void> {
    const change = state.change!;
    if (this.driverOf(state) !== this.deps.selfId) return;
    if (change.phase === 'pending' && !(await this.receiversComplete(state))) return;
    if (change.phase === 'switched' && !(await this.leaversDelivered(state))) return;
    const committed = await this.deps.proposer.propose((current) => {
      if (current.change?.id !== change.id || current.change.phase !== change.phase) return { refusal: `change ${change.id} moved on meanwhile` };
      return { state: advanceChange(current) };
    }, this.deps.stepMs);
    this.deps.logger.warn({ epoch: committed.epoch }, committed.change === undefined ? `change ${change.id} complete at membership epoch ${committed.epoch}` : `change ${change.id}: reads switched to the new owners at membership epoch ${committed.epoch}`);
  }

  /**
   * Whether every live member that is leaving has delivered its whole replication log: once
   * removed it is fenced, and what it still held for others would never arrive.
   */
  private async leaversDelivered(state: MembershipState): Promise<boolean> {
    const { selfId, peerCallMs, clock } = this.deps;
    for (const m of state.members) {
      if (m.state !== 'leaving' || m.dead === true) continue;
      const link = this.deps.peers.link(m.id);
      if (m.id === selfId || link === undefined) return false; // the driver is never a leaver (driverOf)
      try {
        const answer = await link.client.ping({ fromNodeId: selfId }, { signal: clock.timeoutSignal(peerCallMs) });
        if (Number(answer.logEntries) > 0) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  /** Whether every member gaining ranges has received all of them (asked by Ping; this node's own progress directly). */
  private async receiversComplete(state: MembershipState): Promise<boolean> {
    const dead = new Set(state.members.filter((m) => m.dead === true).map((m) => m.id));
    const receivers = new Set(planTransfers(state, this.deps.live.view(), this.deps.vnodesPerMember, dead).map((t) => t.receiver));
    const { selfId, peerCallMs, clock } = this.deps;
    for (const id of receivers) {
      if (id === selfId) {
        if (this.progress()?.complete !== true) return false;
        continue;
      }
      const link = this.deps.peers.link(id);
      if (link === undefined) return false;
      try {
        const answer = await link.client.ping({ fromNodeId: selfId }, { signal: clock.timeoutSignal(peerCallMs) });
        if (answer.streaming !== undefined) this.reported.set(id, answer.streaming);
        if (answer.streaming === undefined || Number(answer.streaming.changeId) !== state.change!.id || !answer.streaming.complete) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  /** Deletes, page by page, the records this node no longer replicates (after a change). */
  private async cleanupStep(): Promise<void> {
    for (let page = 0; page < cleanupPagesPerStep && this.cleanupAfter !== undefined; page++) {
      const keys = this.deps.repo.keysAfter(this.cleanupAfter, cleanupKeysPerPage);
      if (keys.length === 0) {
        this.cleanupAfter = undefined;
        if (this.cleanedUp > 0) this.deps.logger.info({ deleted: this.cleanedUp }, `cleanup after the membership change done: ${this.cleanedUp} records this node no longer replicates deleted`);
        return;
      }
      // Re-checked in the write transaction: a change started meanwhile stops the cleanup.
      const unowned = (key: Buffer) => this.deps.live.current().change === undefined && !this.deps.live.view().writeReplicas(key).includes(this.deps.selfId);
      this.cleanedUp += await this.deps.repo.deleteUnowned(keys, unowned);
      this.cleanupAfter = keys[keys.length - 1]!;
    }
  }
}

/** The members declared dead, as one comparable string (sorted ids). */
function deadMembersOf(state: MembershipState): string {
  return state.members.filter((m) => m.dead === true).map((m) => m.id).sort().join(',');
}
