import { z } from 'zod';

/**
 * The cluster's membership as persisted on every node (docs/membership.md, section 1): an epoch,
 * raised by one at every change of the member list, and the members with their states.
 *
 * The state is seeded from `cluster.members` once, then changes only by agreement
 * (src/replication/membership-proposer.ts): add, remove, replace, cancel and mark-dead.
 */
export type MemberState = 'joining' | 'normal' | 'leaving' | 'removed';

export interface Member {
  readonly id: string;
  /** host:port of its peer (internal) API. */
  readonly peer: string;
  readonly state: MemberState;
  /** Whose vnode names give its tokens, when not its own id (a replacement's: §4.4). */
  readonly tokensOf?: string;
  /**
   * Declared dead by an operator (`kvctl member mark-dead`, §2.5): left out of every agreement
   * quorum, of tombstone-GC confirmations and of the log floor, and fenced (its requests are
   * refused). Still an owner on the ring until it is removed or replaced.
   */
  readonly dead?: true;
}

/** The phases of a change (§3): pending (reads on the old ring), switched (reads on the new). */
export type ChangePhase = 'pending' | 'switched';

/** The change in progress: one at a time (§2.1). */
export interface Change {
  /** Numbered from 1 in the order changes were started. */
  readonly id: number;
  readonly kind: 'add' | 'remove' | 'replace';
  readonly phase: ChangePhase;
  /** The members it moves: the joiner, the leaver, or the leaver then its replacement. */
  readonly subjects: readonly string[];
}

export interface MembershipState {
  readonly formatVersion: 1;
  readonly epoch: number;
  /** Members sorted by id; removed ones stay (ids are never reused). */
  readonly members: readonly Member[];
  readonly change?: Change;
  /** The last change's id (0 before the first). */
  readonly lastChangeId?: number;
}

/** A change an operator asks for (kvctl member add / remove / replace). */
export type ChangeRequest =
  | { readonly kind: 'add'; readonly id: string; readonly peer: string }
  | { readonly kind: 'remove'; readonly id: string }
  | { readonly kind: 'replace'; readonly oldId: string; readonly newId: string; readonly peer: string };

const memberSchema = z.object({ id: z.string().min(1), peer: z.string(), state: z.enum(['joining', 'normal', 'leaving', 'removed']), tokensOf: z.string().min(1).optional(), dead: z.literal(true).optional() });
const membershipSchema = z.object({
  formatVersion: z.literal(1),
  epoch: z.number().int().min(1),
  members: z.array(memberSchema).min(1),
  change: z.object({ id: z.number().int().min(1), kind: z.enum(['add', 'remove', 'replace']), phase: z.enum(['pending', 'switched']), subjects: z.array(z.string().min(1)).min(1) }).optional(),
  lastChangeId: z.number().int().min(0).optional(),
});

/** The state of a cluster first formed from `members` (all normal, epoch 1). */
export function seedMembership(members: readonly { id: string; peer: string }[]): MembershipState {
  return { formatVersion: 1, epoch: 1, members: sortById(members.map((m) => ({ id: m.id, peer: m.peer, state: 'normal' as const }))) };
}

/**
 * The state to run with, given what this node stored (undefined on a new data dir) and the
 * configured members: `cluster.members` seeds a new cluster only. Once a state is stored it is
 * the membership, whatever the config says (members change by agreement: kvctl member ...);
 * `ignored` says how the configured list differs, for a warning. Adopting an edited list, as
 * earlier versions did, would let one restarted node with an outdated config undo an agreed
 * change everywhere (its peers catch up to the higher epoch).
 */
export function reconcileMembership(stored: MembershipState | undefined, configured: readonly { id: string; peer: string }[]): { state: MembershipState; ignored: string | undefined } {
  if (stored === undefined) return { state: seedMembership(configured), ignored: undefined };
  const current = stored.members.filter((m) => m.state !== 'removed');
  // Member ids only: a configured peer address is how this node dials the member (it may differ
  // per node, e.g. through a proxy), not part of the agreed state.
  const ids = (ms: readonly { id: string }[]) => [...ms.map((m) => m.id)].sort().join(', ');
  if (ids(current) === ids(configured)) return { state: stored, ignored: undefined };
  return {
    state: stored,
    ignored:
      `cluster.members (${ids(configured)}) differs from the stored membership of epoch ${stored.epoch} (${ids(current)}): the stored membership is used. ` +
      'cluster.members only seeds a new cluster; members change with kvctl member add / remove / replace',
  };
}

export function encodeMembership(state: MembershipState): Buffer {
  return Buffer.from(JSON.stringify(state), 'utf8');
}

/** Decodes a stored state; throws with the reason if it is not one. */
export function decodeMembership(bytes: Uint8Array): MembershipState {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (err) {
    throw new Error(`stored membership is not JSON (${(err as Error).message})`);
  }
  const parsed = membershipSchema.safeParse(json);
  if (!parsed.success) throw new Error(`stored membership is malformed: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { epoch, members, change, lastChangeId } = parsed.data;
  return { formatVersion: 1, epoch, members: sortById(members), ...(change === undefined ? {} : { change }), ...(lastChangeId === undefined ? {} : { lastChangeId }) };
}

/** Member ids: what ring ids are (ASCII letters, digits, '.', '_', '-'; at most 64). */
const memberIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
const peerPattern = /^[^\s:]+:\d{1,5}$/;

/** A change in words, for refusals and logs: "add n4 (10.0.0.4:50052)". */
export function describeChange(state: MembershipState, change: Change): string {
  const peerOf = (id: string) => state.members.find((m) => m.id === id)?.peer ?? '?';
  const [first, second] = change.subjects;
  const what = change.kind === 'replace' ? `replace ${first} by ${second} (${peerOf(second!)})` : `${change.kind} ${first} (${peerOf(first!)})`;
  return `change ${change.id}: ${what}, phase ${change.phase}`;
}

/**
 * The next state (epoch + 1, phase pending) for a change, or why it is refused. Pure: the
 * agreement protocol (§2) decides whether it takes effect. The replication factor is needed to
 * refuse a removal that would leave fewer members than replicas.
 */
export function proposeChange(state: MembershipState, request: ChangeRequest, replicationFactor: number): { state: MembershipState } | { refusal: string } {
  if (state.change !== undefined) {
    return { refusal: `${describeChange(state, state.change)} is in progress: wait for it (kvctl member wait) or cancel it (kvctl member cancel)` };
  }
  const find = (id: string) => state.members.find((m) => m.id === id);
  const active = state.members.filter((m) => m.state !== 'removed');
  const checkNew = (id: string, peer: string): string | undefined => {
    if (!memberIdPattern.test(id)) return `member id "${id}" must be 1-64 ASCII letters, digits, '.', '_' or '-'`;
    if (!peerPattern.test(peer)) return `peer address "${peer}" must be host:port`;
    const existing = find(id);
    if (existing !== undefined) return existing.state === 'removed' ? `member id "${id}" was removed earlier; ids are never reused (a new node takes a new id)` : `"${id}" is already a member`;
    if (active.some((m) => m.peer === peer)) return `peer address ${peer} is already member ${active.find((m) => m.peer === peer)!.id}'s`;
    return undefined;
  };
  const checkLeaving = (id: string): string | undefined => {
    const member = find(id);
    if (member === undefined || member.state === 'removed') return `"${id}" is not a member`;
    return undefined;
  };
  const changeId = (state.lastChangeId ?? 0) + 1;
  const next = (members: readonly Member[], kind: Change['kind'], subjects: string[]): { state: MembershipState } => ({
    state: { formatVersion: 1, epoch: state.epoch + 1, members: sortById(members), change: { id: changeId, kind, phase: 'pending', subjects }, lastChangeId: changeId },
  });
  switch (request.kind) {
    case 'add': {
      const problem = checkNew(request.id, request.peer);
      if (problem !== undefined) return { refusal: problem };
      return next([...state.members, { id: request.id, peer: request.peer, state: 'joining' }], 'add', [request.id]);
    }
    case 'remove': {
      const problem = checkLeaving(request.id);
      if (problem !== undefined) return { refusal: problem };
      if (active.length - 1 < replicationFactor) {
        return { refusal: `removing ${request.id} would leave ${active.length - 1} members for replication factor ${replicationFactor}: add a member first` };
      }
      return next(state.members.map((m) => (m.id === request.id ? { ...m, state: 'leaving' as const } : m)), 'remove', [request.id]);
    }
    case 'replace': {
      const problem = checkLeaving(request.oldId) ?? checkNew(request.newId, request.peer);
      if (problem !== undefined) return { refusal: problem };
      const old = find(request.oldId)!;
      const members = state.members.map((m) => (m.id === request.oldId ? { ...m, state: 'leaving' as const } : m));
      return next([...members, { id: request.newId, peer: request.peer, state: 'joining', tokensOf: old.tokensOf ?? old.id }], 'replace', [request.oldId, request.newId]);
    }
  }
}

/**
 * The change's next step (epoch + 1): pending -> switched (reads move to the new ring), then
 * switched -> done (joiners normal, leavers removed, no change in progress).
 */
export function advanceChange(state: MembershipState): MembershipState {
  const change = state.change;
  if (change === undefined) throw new Error('no change in progress to advance');
  if (change.phase === 'pending') return { ...state, epoch: state.epoch + 1, change: { ...change, phase: 'switched' } };
  const members = state.members.map((m) => (m.state === 'joining' ? { ...m, state: 'normal' as const } : m.state === 'leaving' ? { ...m, state: 'removed' as const } : m));
  return withoutChange({ ...state, epoch: state.epoch + 1, members });
}

/**
 * Declares `id` dead (epoch + 1, §2.5), or why not. Allowed while a change is in progress (that
 * change may be blocked on the dead member). Whether the member is really out of reach is each
 * acceptor's check, not this function's. A cluster whose live members would no longer be more
 * than half of its members is refused: each side of a partition could otherwise declare the
 * other dead.
 */
export function markDead(state: MembershipState, id: string): { state: MembershipState } | { refusal: string } {
  const member = state.members.find((m) => m.id === id);
  if (member === undefined || member.state === 'removed') return { refusal: `"${id}" is not a member` };
  if (member.dead === true) return { refusal: `${id} is already marked dead` };
  const active = state.members.filter((m) => m.state !== 'removed');
  const liveAfter = active.filter((m) => m.dead !== true && m.id !== id).length;
  if (liveAfter * 2 <= active.length) {
    return { refusal: `marking ${id} dead would leave ${liveAfter} live members of ${active.length}, not a majority: a partition could then let each side declare the other dead` };
  }
  return { state: { ...state, epoch: state.epoch + 1, members: state.members.map((m) => (m.id === id ? { ...m, dead: true as const } : m)) } };
}

/** Cancels a pending change (epoch + 1): joiners removed, leavers normal again; or why not. */
export function cancelChange(state: MembershipState): { state: MembershipState } | { refusal: string } {
  const change = state.change;
  if (change === undefined) return { refusal: 'no change in progress' };
  if (change.phase !== 'pending') {
    return { refusal: `${describeChange(state, change)} has switched reads to the new owners; let it finish, then run the inverse change` };
  }
  const members = state.members.map((m) => (m.state === 'joining' ? { ...m, state: 'removed' as const } : m.state === 'leaving' ? { ...m, state: 'normal' as const } : m));
  return { state: withoutChange({ ...state, epoch: state.epoch + 1, members }) };
}

function withoutChange(state: MembershipState): MembershipState {
  const { change: _done, ...rest } = state;
  return rest;
}

function sortById<T extends { id: string }>(members: readonly T[]): T[] {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
