import type { MembershipState } from './membership.js';

/**
 * Agreement on the next membership epoch (docs/membership.md §2.2): single-decree Paxos per
 * epoch whose quorum is every member that is not removed. Pure state machines; the messages'
 * transport and the persistence of an acceptor's state before it answers belong to the
 * replication layer (not built yet).
 */

/** A proposal number: ordered by counter, then proposer id. */
export interface Ballot {
  readonly counter: number;
  readonly proposer: string;
}

export function compareBallots(a: Ballot, b: Ballot): number {
  return a.counter - b.counter || (a.proposer < b.proposer ? -1 : a.proposer > b.proposer ? 1 : 0);
}

/** What an acceptor keeps (and must persist before answering) for the epoch after its committed one. */
export interface AcceptorState {
  readonly committed: MembershipState;
  readonly promised?: Ballot;
  readonly accepted?: { readonly ballot: Ballot; readonly state: MembershipState };
}

export type PrepareReply =
  | { readonly kind: 'promise'; readonly accepted?: { readonly ballot: Ballot; readonly state: MembershipState } }
  | { readonly kind: 'refused'; readonly reason: string; readonly committedEpoch: number; readonly promised?: Ballot };

export type AcceptReply = { readonly kind: 'accepted' } | { readonly kind: 'refused'; readonly reason: string; readonly committedEpoch: number; readonly promised?: Ballot };

/** Phase 1: promise not to accept a lower ballot for `epoch`, answering what was accepted already. */
export function onPrepare(acceptor: AcceptorState, epoch: number, ballot: Ballot): { acceptor: AcceptorState; reply: PrepareReply } {
  const committedEpoch = acceptor.committed.epoch;
  if (epoch !== committedEpoch + 1) {
    return { acceptor, reply: { kind: 'refused', reason: `this member is at epoch ${committedEpoch}, the proposal is for epoch ${epoch}`, committedEpoch } };
  }
  if (acceptor.promised !== undefined && compareBallots(ballot, acceptor.promised) < 0) {
    return { acceptor, reply: { kind: 'refused', reason: 'a higher ballot was promised', committedEpoch, promised: acceptor.promised } };
  }
  return { acceptor: { ...acceptor, promised: ballot }, reply: acceptor.accepted === undefined ? { kind: 'promise' } : { kind: 'promise', accepted: acceptor.accepted } };
}

/** Phase 2: accept `state` for the next epoch unless a higher ballot was promised. */
export function onAccept(acceptor: AcceptorState, ballot: Ballot, state: MembershipState): { acceptor: AcceptorState; reply: AcceptReply } {
  const committedEpoch = acceptor.committed.epoch;
  if (state.epoch !== committedEpoch + 1) {
    return { acceptor, reply: { kind: 'refused', reason: `this member is at epoch ${committedEpoch}, the proposed state is epoch ${state.epoch}`, committedEpoch } };
  }
  if (acceptor.promised !== undefined && compareBallots(ballot, acceptor.promised) < 0) {
    return { acceptor, reply: { kind: 'refused', reason: 'a higher ballot was promised', committedEpoch, promised: acceptor.promised } };
  }
  return { acceptor: { committed: acceptor.committed, promised: ballot, accepted: { ballot, state } }, reply: { kind: 'accepted' } };
}

/** A chosen state reaches an acceptor: adopted if it is the next epoch (else the member must fetch). */
export function onCommit(acceptor: AcceptorState, state: MembershipState): { acceptor: AcceptorState; adopted: boolean } {
  if (state.epoch !== acceptor.committed.epoch + 1) return { acceptor, adopted: state.epoch <= acceptor.committed.epoch };
  return { acceptor: { committed: state }, adopted: true };
}

/**
 * The members whose answers a step from `committed` to `proposed` needs (§2.1 rule 2): every
 * member that is not removed and not dead (in either state: the member a mark-dead step
 * declares dead is not asked), plus every joiner the proposal names (it will act on it).
 */
export function quorumOf(committed: MembershipState, proposed: MembershipState): string[] {
  const deadIn = (state: MembershipState) => new Set(state.members.filter((m) => m.dead === true).map((m) => m.id));
  const dead = new Set([...deadIn(committed), ...deadIn(proposed)]);
  const ids = new Set<string>();
  for (const m of committed.members) if (m.state !== 'removed' && !dead.has(m.id)) ids.add(m.id);
  for (const m of proposed.members) if (m.state === 'joining' && !dead.has(m.id)) ids.add(m.id);
  return [...ids].sort();
}

/**
 * What a proposer proposes once it holds promises: the state accepted under the highest ballot
 * among them (a change someone else started is finished, never half-applied), else its own.
 */
export function valueToPropose(promises: readonly PrepareReply[], own: MembershipState): MembershipState {
  let best: { ballot: Ballot; state: MembershipState } | undefined;
  for (const p of promises) {
    if (p.kind !== 'promise' || p.accepted === undefined) continue;
    if (best === undefined || compareBallots(p.accepted.ballot, best.ballot) > 0) best = p.accepted;
  }
  return best?.state ?? own;
}
