import { DigestForest } from '../cluster/digest-tree.js';
import type { Member, MembershipState } from '../cluster/membership.js';
import type { Ring } from '../cluster/ring.js';
import { type PlacementSettings, RingView } from '../cluster/ring-view.js';
import { NotServingMemberError } from './errors.js';

/** Called after a new state is in place (persisted, view swapped), in registration order. */
export type MembershipListener = (state: MembershipState, previous: MembershipState) => Promise<void> | void;

/** Where the committed membership is persisted and how the hash trees are refilled. */
export interface LiveMembershipStorage {
  /** Persists the state durably before returning (Repository.storeMembershipBytes). */
  persist(state: MembershipState): Promise<void> | void;
  /**
   * Fills `forest` with every stored record while commits go on (Repository.rebuildObserver),
   * and calls `onSwap` at the moment it is complete and up to date, with no commit in between;
   * from then on commits update it. Rejects if a newer rebuild replaced it before it swapped.
   */
  rebuild(forest: DigestForest, onSwap: () => void): Promise<void>;
}

/**
 * The membership a node runs with right now (docs/membership.md §7.3): the committed state, the
 * RingView it gives, and the hash trees over that view's ring. Every consumer reads it per call
 * (coordinator, anti-entropy, tombstone GC, the replica side), so a committed change takes
 * effect for the next request without a restart. States are adopted one at a time, in epoch
 * order; an adopted state is persisted before anything sees it.
 *
 * During a change the hash trees cover the union ring's ranges (each inside one range of the old
 * ring and one of the new), and writes in flight are counted by the epoch they were planned
 * at, so a node can tell when no write routed by an older epoch is still running (the drain
 * barrier of docs/membership.md §4.1 step 2).
 */
export class LiveMembership {
  private state: MembershipState;
  private ringView: RingView;
  private digestForest: DigestForest;
  /** The ring `digestForest` covers: the view's union ring, or the one before while a rebuild runs. */
  private digestForestRing: Ring;
  private readonly listeners: MembershipListener[] = [];
  private adopting: Promise<void> = Promise.resolve();
  /** Writes in flight per epoch they were planned at. */
  private readonly writesInFlight = new Map<number, number>();

  constructor(
    readonly selfId: string,
    initial: MembershipState,
    private readonly placement: PlacementSettings,
    private readonly storage: LiveMembershipStorage,
  ) {
    this.state = initial;
    this.ringView = this.viewOf(initial);
    this.digestForest = new DigestForest(this.ringView.unionRing);
    this.digestForestRing = this.ringView.unionRing;
  }

  /**
   * A node started with `cluster.join` that no member has added yet: epoch 0, itself alone, not
   * persisted. It serves nothing, and takes the cluster's state from the first Prepare naming it.
   */
  static unjoined(selfId: string, peer: string): MembershipState {
    return { formatVersion: 1, epoch: 0, members: [{ id: selfId, peer, state: 'joining' }] };
  }

  get isUnjoined(): boolean {
    return this.state.epoch === 0;
  }

  private viewOf(state: MembershipState): RingView {
    if (state.epoch > 0) return RingView.from(state, this.placement);
    // The unjoined node's view: itself alone (it routes nothing: assertServing refuses first).
    return RingView.from({ ...state, members: state.members.map((m) => ({ ...m, state: 'normal' as const })) }, { ...this.placement, replicationFactor: 1 });
  }

  /** The committed state. */
  current(): MembershipState {
    return this.state;
  }

  get epoch(): number {
    return this.state.epoch;
  }

  view(): RingView {
    return this.ringView;
  }

  /** The ring reads use (outside a change, the only one). */
  ring(): Ring {
    return this.ringView.readRing;
  }

  /**
   * The ring the hash trees cover: the view's union ring (during a change, the ring over both
   * rings' members), or, while the trees for a new one are being filled, the previous one.
   */
  forestRing(): Ring {
    return this.digestForestRing;
  }

  /**
   * Whether the hash trees cover the view's union ring: false while they are being rebuilt
   * after a placement change. Anti-entropy and verify, which pair the trees' ranges with the
   * view's owners, wait for it.
   */
  forestIsCurrent(): boolean {
    return this.digestForestRing === this.ringView.unionRing || this.digestForestRing.placementKey() === this.ringView.unionRing.placementKey();
  }

  /** The hash trees over `forestRing()`'s ranges: anti-entropy compares them, the replica side answers them. */
  forest(): DigestForest {
    return this.digestForest;
  }

  member(id: string): Member | undefined {
    return this.state.members.find((m) => m.id === id);
  }

  /** A member not removed and not declared dead: one this node talks to and waits for. */
  isLive(id: string): boolean {
    const m = this.member(id);
    return m !== undefined && m.state !== 'removed' && m.dead !== true;
  }

  /** Members that are not removed (dead ones included: they still own ranges). */
  activeMembers(): Member[] {
    return this.state.members.filter((m) => m.state !== 'removed');
  }

  /**
   * Throws if this node must not serve: it was declared dead or removed (it learns so from its
   * peers at start, or when a commit reaches it). It stays up, so an operator sees why, and
   * serves nothing; its peers refuse its requests too (fenced).
   */
  assertServing(): void {
    if (this.isUnjoined) {
      throw new NotServingMemberError(`${this.selfId} is not a member yet (started with cluster.join): add it with \`kvctl member add ${this.selfId} <its peer host:port>\` on a member`);
    }
    const self = this.member(this.selfId);
    if (self === undefined) {
      throw new NotServingMemberError(`${this.selfId} is not a member at membership epoch ${this.state.epoch} (it is being added, or was never added): it serves nothing yet`);
    }
    if (self.dead === true || self.state === 'removed') {
      throw new NotServingMemberError(
        `${this.selfId} was ${self.dead === true ? 'declared dead' : 'removed'} at membership epoch ${this.state.epoch}: it serves nothing. Stop it and wipe its data dir before it rejoins under a new id`,
      );
    }
  }

  /** Counts a write planned now; call the returned function once it is answered. */
  beginWrite(): () => void {
    const epoch = this.state.epoch;
    this.writesInFlight.set(epoch, (this.writesInFlight.get(epoch) ?? 0) + 1);
    return () => {
      const left = this.writesInFlight.get(epoch)! - 1;
      if (left === 0) this.writesInFlight.delete(epoch);
      else this.writesInFlight.set(epoch, left);
    };
  }

  /** The highest epoch e such that no write planned before e is still running (the drain barrier). */
  drainedEpoch(): number {
    let oldest = this.state.epoch;
    for (const epoch of this.writesInFlight.keys()) oldest = Math.min(oldest, epoch);
    return oldest;
  }

  /**
   * assertServing, and a member leaving the cluster stops coordinating client requests once reads
   * have moved to the new owners (clients fail over on UNAVAILABLE); it still applies what its
   * peers send it until it is removed.
   */
  assertCoordinating(): void {
    this.assertServing();
    if (this.ringView.phase === 'switched' && this.member(this.selfId)?.state === 'leaving') {
      throw new NotServingMemberError(`${this.selfId} is leaving the cluster (${this.state.change === undefined ? '' : `change ${this.state.change.id}`}): retry on another node`);
    }
  }

  onChange(listener: MembershipListener): void {
    this.listeners.push(listener);
  }

  /**
   * Makes `state` the committed one: persisted, then the view (and, if the ring changed, the hash
   * trees) swapped, then the listeners run. A state at or below the current epoch is ignored (a
   * commit that arrives twice). Serialized: a second adopt waits for the first.
   */
  adopt(state: MembershipState): Promise<void> {
    const run = this.adopting.then(() => this.adoptNow(state));
    this.adopting = run.catch(() => {});
    return run;
  }

  private async adoptNow(state: MembershipState): Promise<void> {
    if (state.epoch <= this.state.epoch) return;
    const view = this.viewOf(state);
    await this.storage.persist(state);
    const previous = this.state;
    const ringChanged = view.unionRing.placementKey() !== this.ringView.unionRing.placementKey();
    this.state = state;
    this.ringView = view;
    if (ringChanged) {
      // Filled in pages while the node keeps serving (a synchronous replay stopped a node holding
      // a million records for about 4 s, twice per change); the old trees answer meanwhile,
      // under their own ring's id, and are swapped for the new ones once those are complete.
      const next = new DigestForest(view.unionRing);
      const ring = view.unionRing;
      this.storage
        .rebuild(next, () => {
          this.digestForest = next;
          this.digestForestRing = ring;
        })
        .catch(() => {}); // replaced by a newer rebuild before it swapped: nothing to do
    } else if (this.forestIsCurrent()) {
      this.digestForestRing = view.unionRing;
    }
    for (const listener of this.listeners) await listener(state, previous);
  }

}
