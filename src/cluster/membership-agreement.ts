import { z } from 'zod';
import { advanceChange, cancelChange, type ChangeRequest, decodeMembership, describeChange, encodeMembership, markDead, type MembershipState, proposeChange } from './membership.js';

/**
 * Agreement on the next membership epoch (docs/membership.md §2.2): single-decree Paxos per
 * epoch whose quorum is every member that is not removed. Pure state machines; the messages'
 * transport and the persistence of an acceptor's state before it answers belong to the
 * replication layer (src/replication/membership-acceptor.ts, membership-proposer.ts).
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

/**
 * A state in one canonical text: members sorted, optional fields absent when empty (a
 * `lastChangeId` of 0 is the same as none), so two states compare equal exactly when they mean
 * the same membership, however they were built or carried.
 */
function canonicalMembership(state: MembershipState): string {
  const members = [...state.members]
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((m) => [m.id, m.peer, m.state, m.tokensOf ?? '', m.dead === true]);
  const change = state.change === undefined ? null : [state.change.id, state.change.kind, state.change.phase, [...state.change.subjects]];
  return JSON.stringify([state.formatVersion, state.epoch, members, change, state.lastChangeId ?? 0]);
}

/** Whether two states are the same membership (see canonicalMembership). */
export function sameMembership(a: MembershipState, b: MembershipState): boolean {
  return canonicalMembership(a) === canonicalMembership(b);
}

/** The members `next` declares dead that `committed` did not. */
function newlyDead(committed: MembershipState, next: MembershipState): string[] {
  return next.members.filter((m) => m.dead === true && committed.members.find((c) => c.id === m.id)?.dead !== true).map((m) => m.id);
}

/** The operator request that would have started `next`'s change from `committed`, if `next` starts one. */
function requestStarting(committed: MembershipState, next: MembershipState): ChangeRequest | undefined {
  const change = next.change;
  if (change === undefined || change.phase !== 'pending' || change.id === committed.change?.id) return undefined;
  const [first, second] = change.subjects;
  const peerOf = (id: string | undefined) => next.members.find((m) => m.id === id)?.peer ?? '';
  if (change.kind === 'add' && first !== undefined) return { kind: 'add', id: first, peer: peerOf(first) };
  if (change.kind === 'remove' && first !== undefined) return { kind: 'remove', id: first };
  if (change.kind === 'replace' && first !== undefined && second !== undefined) return { kind: 'replace', oldId: first, newId: second, peer: peerOf(second) };
  return undefined;
}

/**
 * Why `next` may not follow `committed` (undefined: it may): it must be exactly one step that
 * the pure change functions produce from `committed` (proposeChange, advanceChange,
 * cancelChange, markDead), at epoch + 1. Every acceptor checks it before accepting (§2.2 step
 * 3), so a buggy or mismatched proposer cannot commit a state no operator command could make.
 * `replicationFactor` bounds a removal as proposeChange does (1 when the caller does not know it).
 */
export function isLegalTransition(committedHere: MembershipState, next: MembershipState, replicationFactor = 1): string | undefined {
  if (next.epoch !== committedHere.epoch + 1) return `epoch ${next.epoch} does not follow epoch ${committedHere.epoch}: each step raises the epoch by one`;
  // The peer address of a member both states hold is not part of the step: each node's state
  // holds the addresses it was seeded with (how it dials them: a proxy, NAT), which may differ
  // from the proposer's. The proposer's are adopted; nodes dial by their configured ones first.
  const committed: MembershipState = { ...committedHere, members: committedHere.members.map((m) => ({ ...m, peer: next.members.find((n) => n.id === m.id)?.peer ?? m.peer })) };
  const candidates: MembershipState[] = [];
  const refusals: string[] = [];
  const consider = (result: { state: MembershipState } | { refusal: string }) => {
    if ('state' in result) candidates.push(result.state);
    else refusals.push(result.refusal);
  };
  if (committed.change !== undefined) {
    candidates.push(advanceChange(committed));
    const cancelled = cancelChange(committed);
    if ('state' in cancelled) candidates.push(cancelled.state);
  }
  const dead = newlyDead(committed, next);
  if (dead.length === 1) consider(markDead(committed, dead[0]!));
  const request = requestStarting(committed, next);
  if (request !== undefined) consider(proposeChange(committed, request, replicationFactor));
  if (candidates.some((c) => sameMembership(c, next))) return undefined;
  // A refusal of the step `next` looks like says most; else what differs.
  if (refusals.length > 0) return refusals.join('; ');
  return `the state for epoch ${next.epoch} is not one membership step from epoch ${committed.epoch} (${differences(committed, next)}); a step is one add, remove, replace, advance, cancel or mark-dead`;
}

/** What differs between two states, in words: "members n2, n3 changed; the change in progress changed". */
function differences(a: MembershipState, b: MembershipState): string {
  const ids = [...new Set([...a.members, ...b.members].map((m) => m.id))].sort();
  const one = (state: MembershipState, id: string) => {
    const m = state.members.find((x) => x.id === id);
    return m === undefined ? '' : JSON.stringify([m.peer, m.state, m.tokensOf ?? '', m.dead === true]);
  };
  const changed = ids.filter((id) => one(a, id) !== one(b, id));
  const parts: string[] = [];
  if (changed.length > 0) parts.push(`member${changed.length === 1 ? '' : 's'} ${changed.join(', ')} changed`);
  if (JSON.stringify(a.change ?? null) !== JSON.stringify(b.change ?? null)) parts.push('the change in progress changed');
  if ((a.lastChangeId ?? 0) !== (b.lastChangeId ?? 0)) parts.push(`the last change id went from ${a.lastChangeId ?? 0} to ${b.lastChangeId ?? 0}`);
  return parts.length > 0 ? parts.join('; ') : 'nothing but the epoch changed';
}

/**
 * A step in words, for the answer of a proposer whose own change lost to it: "mark-dead n3",
 * "change 2: add n4 (10.0.0.4:50052), phase pending", "change 2 (...) advanced to switched".
 */
export function describeTransition(committed: MembershipState, next: MembershipState): string {
  const dead = newlyDead(committed, next);
  if (dead.length > 0) return `mark-dead ${dead.join(', ')}`;
  if (next.change !== undefined && next.change.id !== committed.change?.id) return describeChange(next, next.change);
  const before = committed.change;
  if (before !== undefined) {
    if (next.change !== undefined) return `${describeChange(committed, before)} advanced to ${next.change.phase}`;
    const cancelled = before.phase === 'pending';
    return `${describeChange(committed, before)} ${cancelled ? 'cancelled' : 'completed'}`;
  }
  return `the state of epoch ${next.epoch}`;
}

/** What an acceptor persists (meta `membership/acceptor`): its promise and acceptance for `epoch`. */
export interface AcceptorRecord {
  /** The epoch the promise and acceptance are for: stale once the committed epoch reaches it. */
  readonly epoch: number;
  readonly promised?: Ballot;
  readonly accepted?: { readonly ballot: Ballot; readonly state: MembershipState };
}

const ballotSchema = z.object({ counter: z.number().int().min(0), proposer: z.string().min(1) });
const acceptorRecordSchema = z.object({
  formatVersion: z.literal(1),
  epoch: z.number().int().min(2),
  promised: ballotSchema.optional(),
  accepted: z.object({ ballot: ballotSchema, state: z.unknown() }).optional(),
});

/** The persisted form: JSON, like the membership document, readable with mdb_dump. */
export function encodeAcceptorRecord(record: AcceptorRecord): Buffer {
  const accepted = record.accepted === undefined ? undefined : { ballot: record.accepted.ballot, state: JSON.parse(encodeMembership(record.accepted.state).toString('utf8')) as unknown };
  return Buffer.from(JSON.stringify({ formatVersion: 1, epoch: record.epoch, promised: record.promised, accepted }), 'utf8');
}

/**
 * Decodes a persisted acceptor record; throws with the reason if it is not one. Never read as
 * "nothing promised": forgetting a promise could let two states be chosen for one epoch.
 */
export function decodeAcceptorRecord(bytes: Uint8Array): AcceptorRecord {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new Error(`stored membership acceptor state is not JSON (${(err as Error).message})`);
  }
  const parsed = acceptorRecordSchema.safeParse(json);
  if (!parsed.success) throw new Error(`stored membership acceptor state is malformed: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { epoch, promised, accepted } = parsed.data;
  return {
    epoch,
    ...(promised === undefined ? {} : { promised }),
    ...(accepted === undefined ? {} : { accepted: { ballot: accepted.ballot, state: decodeMembership(Buffer.from(JSON.stringify(accepted.state), 'utf8')) } }),
  };
}
