import type { Member, MembershipState } from './membership.js';
import { Ring, type RingMember } from './ring.js';

/** A member as the ring places it (its tokens are its own, or those it took over). */
export function ringMemberOf(m: Member): RingMember {
  return m.tokensOf === undefined ? { id: m.id } : { id: m.id, tokensOf: m.tokensOf };
}

/** Placement settings fixed when the cluster was first formed. */
export interface PlacementSettings {
  readonly replicationFactor: number;
  readonly vnodesPerMember: number;
}

/**
 * Where reads and writes go at one membership epoch (docs/membership.md §3). Outside a change
 * there is one ring. During one there are two: `oldRing` over the normal and leaving members,
 * `newRing` over the normal and joining ones. Writes need W acknowledgements in each ring's
 * replicas (the dual quorum); reads use the old ring while the change is pending and the new
 * one once it has switched. Immutable: one per epoch.
 */
export class RingView {
  private constructor(
    readonly epoch: number,
    readonly phase: 'normal' | 'pending' | 'switched',
    readonly oldRing: Ring,
    readonly newRing: Ring,
    /**
     * The ring over both rings' members: its ranges each lie inside one range of the old ring and
     * one of the new (the unit of transfer, and the hash trees' ranges during a change). Outside
     * a change, the one ring.
     */
    readonly unionRing: Ring,
    readonly replicationFactor: number,
  ) {
    this.unionRanges = unionRing.ranges();
  }

  private readonly unionRanges: readonly { readonly endInclusive: number }[];

  static from(state: MembershipState, settings: PlacementSettings): RingView {
    const ringOf = (members: readonly RingMember[]) => new Ring(members, settings.vnodesPerMember);
    const oldMembers = state.members.filter((m) => m.state === 'normal' || m.state === 'leaving').map(ringMemberOf);
    const newMembers = state.members.filter((m) => m.state === 'normal' || m.state === 'joining').map(ringMemberOf);
    const rf = settings.replicationFactor;
    for (const [name, members] of [['old', oldMembers], ['new', newMembers]] as const) {
      if (members.length < rf) throw new Error(`the ${name} ring of epoch ${state.epoch} has ${members.length} members, fewer than replication factor ${rf}`);
    }
    if (state.change === undefined) {
      const ring = ringOf(newMembers);
      return new RingView(state.epoch, 'normal', ring, ring, ring, rf);
    }
    const unionMembers = state.members.filter((m) => m.state !== 'removed').map(ringMemberOf);
    return new RingView(state.epoch, state.change.phase, ringOf(oldMembers), ringOf(newMembers), ringOf(unionMembers), rf);
  }

  /** The ring reads use: the old one while a change is pending, the new one after. */
  get readRing(): Ring {
    return this.phase === 'pending' ? this.oldRing : this.newRing;
  }

  /**
   * The owners of a range of `unionRing` (by index) in the old and the new ring, and whether
   * they differ: a moving range (its data is streamed, not repaired or purged meanwhile).
   */
  ownersOfUnionRange(index: number): { old: string[]; new: string[]; moving: boolean } {
    const end = this.unionRanges[index]!.endInclusive;
    const before = this.oldRing.preferenceListOfHash(end, this.replicationFactor);
    if (this.phase === 'normal') return { old: before, new: before, moving: false };
    const after = this.newRing.preferenceListOfHash(end, this.replicationFactor);
    return { old: before, new: after, moving: before.some((id) => !after.includes(id)) };
  }

  /** Whether the owners of `hash` differ between the old and the new ring. */
  isMovingHash(hash: number): boolean {
    if (this.phase === 'normal') return false;
    const before = this.oldRing.preferenceListOfHash(hash, this.replicationFactor);
    const after = this.newRing.preferenceListOfHash(hash, this.replicationFactor);
    return before.some((id) => !after.includes(id));
  }

  /** Every member a write of `key` goes to: the union of its write sets. */
  writeReplicas(key: Uint8Array): string[] {
    const sets = this.writeSets(key);
    return sets.length === 1 ? sets[0]! : [...new Set(sets.flat())];
  }

  /** The replicas a read asks: the old ring's while pending, the new ring's after. */
  readReplicas(key: Uint8Array): string[] {
    return (this.phase === 'pending' ? this.oldRing : this.newRing).preferenceList(key, this.replicationFactor);
  }

  /** The replica sets a write must reach W of, each: one outside a change, old and new during one. */
  writeSets(key: Uint8Array): string[][] {
    const next = this.newRing.preferenceList(key, this.replicationFactor);
    return this.phase === 'normal' ? [next] : [this.oldRing.preferenceList(key, this.replicationFactor), next];
  }
}

/** Whether `acked` holds at least `required` members of every set (the dual quorum during a change). */
export function writeSetsSatisfied(sets: readonly (readonly string[])[], acked: ReadonlySet<string>, required: number): boolean {
  return sets.every((set) => set.filter((id) => acked.has(id)).length >= required);
}
