import type { MembershipState } from './membership.js';
import { Ring, type RingRange } from './ring.js';
import { ringMemberOf, type RingView } from './ring-view.js';

/**
 * One range a member must receive during a change (docs/membership.md §4): its records are
 * streamed to `receiver` from `sources`, the member it displaces first (it holds every write
 * acknowledged in the range), then the range's other old replicas (fallbacks if that one fails).
 */
export interface Transfer {
  /** A range of the union ring: it lies inside one range of the old ring and one of the new. */
  readonly range: RingRange;
  readonly receiver: string;
  readonly sources: readonly string[];
}

/**
 * Every transfer a change needs: for each range of the ring over both rings' members, each
 * member of its new replica set that is not in its old one receives it. Members listed in
 * `dead` are never sources. Pure; the same on every node for the same state.
 */
export function planTransfers(state: MembershipState, view: RingView, vnodesPerMember: number, dead: ReadonlySet<string> = new Set()): Transfer[] {
  if (view.phase === 'normal') return [];
  const rf = view.replicationFactor;
  const union = new Ring(state.members.filter((m) => m.state !== 'removed').map(ringMemberOf), vnodesPerMember);
  const transfers: Transfer[] = [];
  for (const range of union.ranges()) {
    const before = view.oldRing.preferenceListOfHash(range.endInclusive, rf);
    const after = view.newRing.preferenceListOfHash(range.endInclusive, rf);
    const losers = before.filter((id) => !after.includes(id));
    for (const receiver of after.filter((id) => !before.includes(id))) {
      const displaced = losers.filter((id) => !dead.has(id));
      const others = before.filter((id) => !losers.includes(id) && !dead.has(id));
      transfers.push({ range, receiver, sources: [...displaced, ...others] });
    }
  }
  return transfers;
}

/** The share of the hash circle the transfers cover, per receiver (for progress and the plan's size). */
export function transferShares(transfers: readonly Transfer[]): Map<string, number> {
  const shares = new Map<string, number>();
  for (const t of transfers) {
    const width = (t.range.endInclusive - t.range.startExclusive + 2 ** 32) % 2 ** 32 || 2 ** 32;
    shares.set(t.receiver, (shares.get(t.receiver) ?? 0) + width / 2 ** 32);
  }
  return shares;
}
