import {
  type Ballot as BallotMessage,
  ChangeKind,
  ChangePhase,
  type Member as MemberMessage,
  type MembershipAcceptResponse,
  type MembershipCommitResponse,
  type MembershipPrepareResponse,
  type MembershipState as MembershipStateMessage,
  MemberState as MemberStateMessage,
} from '../../gen/kvstore/internal/v1/peer.js';
import type { Ballot } from '../cluster/membership-agreement.js';
import type { Change, Member, MemberState, MembershipState } from '../cluster/membership.js';
import { InvalidRequestError } from './errors.js';
import type { AcceptAnswer, CommitAnswer, PrepareAnswer } from './membership-acceptor.js';

/**
 * Membership states and agreement answers to and from their peer.proto messages (the RPCs of
 * docs/membership.md §2.2). Lossless for every state the pure change functions make: a
 * `lastChangeId` of 0 reads back as absent, which means the same (sameMembership). Whatever a
 * peer sends is checked before anything acts on it: a malformed message is refused with
 * InvalidRequestError saying what is wrong with it.
 */

const memberStateToMessage: Record<MemberState, MemberStateMessage> = {
  joining: MemberStateMessage.MEMBER_STATE_JOINING,
  normal: MemberStateMessage.MEMBER_STATE_NORMAL,
  leaving: MemberStateMessage.MEMBER_STATE_LEAVING,
  removed: MemberStateMessage.MEMBER_STATE_REMOVED,
};
const changeKindToMessage: Record<Change['kind'], ChangeKind> = { add: ChangeKind.CHANGE_KIND_ADD, remove: ChangeKind.CHANGE_KIND_REMOVE, replace: ChangeKind.CHANGE_KIND_REPLACE };
const changePhaseToMessage: Record<Change['phase'], ChangePhase> = { pending: ChangePhase.CHANGE_PHASE_PENDING, switched: ChangePhase.CHANGE_PHASE_SWITCHED };

function inverse<K extends string, V>(table: Record<K, V>): Map<V, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as V, k as K]));
}
const memberStateOf = inverse(memberStateToMessage);
const changeKindOf = inverse(changeKindToMessage);
const changePhaseOf = inverse(changePhaseToMessage);

/** Most characters of a member id, as membership.ts allows. */
const memberIdCharsMax = 64;
/** A peer that sends something we cannot read most likely runs another version. */
const versionHint = 'are all members running the same kvstore version?';

export function membershipToMessage(state: MembershipState): MembershipStateMessage {
  const members = state.members.map(
    (m): MemberMessage => ({ id: m.id, peer: m.peer, state: memberStateToMessage[m.state], tokensOf: m.tokensOf ?? '', dead: m.dead === true }),
  );
  const change = state.change;
  return {
    epoch: BigInt(state.epoch),
    members,
    ...(change === undefined ? {} : { change: { id: BigInt(change.id), kind: changeKindToMessage[change.kind], phase: changePhaseToMessage[change.phase], subjects: [...change.subjects] } }),
    lastChangeId: BigInt(state.lastChangeId ?? 0),
  };
}

/** A number sent as uint64, refused above what a JavaScript number holds exactly. */
function safeNumber(value: bigint, field: string, fail: (problem: string) => never): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${field} ${value} is too large`);
  return Number(value);
}

/** `what` names the message for the refusal: "the state of MembershipAccept from n2". */
export function membershipFromMessage(message: MembershipStateMessage | undefined, what: string): MembershipState {
  const fail = (problem: string): never => {
    throw new InvalidRequestError(`${what} is malformed: ${problem} (${versionHint})`);
  };
  if (message === undefined) return fail('it carries no membership state');
  const epoch = safeNumber(message.epoch, 'epoch', fail);
  if (epoch < 1) fail('epoch 0 (epochs start at 1)');
  if (message.members.length === 0) fail('it lists no members');
  const ids = new Set<string>();
  const members = message.members.map((m, i): Member => {
    if (m.id.length === 0 || m.id.length > memberIdCharsMax) fail(`member ${i + 1} has an id of ${m.id.length} characters (1 to ${memberIdCharsMax})`);
    if (ids.has(m.id)) fail(`member ${m.id} is listed twice`);
    ids.add(m.id);
    const state = memberStateOf.get(m.state) ?? fail(`member ${m.id} has state ${MemberStateMessage[m.state] ?? m.state}`);
    return { id: m.id, peer: m.peer, state, ...(m.tokensOf === '' ? {} : { tokensOf: m.tokensOf }), ...(m.dead ? { dead: true as const } : {}) };
  });
  members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let change: Change | undefined;
  if (message.change !== undefined) {
    const c = message.change;
    const id = safeNumber(c.id, 'change id', fail);
    if (id < 1) fail('change id 0 (changes are numbered from 1)');
    const kind = changeKindOf.get(c.kind) ?? fail(`change ${id} has kind ${ChangeKind[c.kind] ?? c.kind}`);
    const phase = changePhaseOf.get(c.phase) ?? fail(`change ${id} has phase ${ChangePhase[c.phase] ?? c.phase}`);
    if (c.subjects.length === 0) fail(`change ${id} names no member`);
    for (const subject of c.subjects) if (!ids.has(subject)) fail(`change ${id} names "${subject}", which is not among the members`);
    change = { id, kind, phase, subjects: [...c.subjects] };
  }
  const lastChangeId = safeNumber(message.lastChangeId, 'last change id', fail);
  return { formatVersion: 1, epoch, members, ...(change === undefined ? {} : { change }), ...(lastChangeId === 0 ? {} : { lastChangeId }) };
}

export function ballotToMessage(ballot: Ballot): BallotMessage {
  return { counter: BigInt(ballot.counter), proposer: ballot.proposer };
}

export function ballotFromMessage(message: BallotMessage | undefined, what: string): Ballot {
  const fail = (problem: string): never => {
    throw new InvalidRequestError(`${what} is malformed: ${problem} (${versionHint})`);
  };
  if (message === undefined) return fail('it carries no ballot');
  if (message.proposer.length === 0) fail('its ballot names no proposer');
  return { counter: safeNumber(message.counter, 'ballot counter', fail), proposer: message.proposer };
}

/** An epoch sent as uint64 (`field` names it for the refusal). */
export function epochFromMessage(value: bigint, what: string, field = 'epoch'): number {
  return safeNumber(value, field, (problem) => {
    throw new InvalidRequestError(`${what} is malformed: ${problem} (${versionHint})`);
  });
}

export function prepareAnswerToMessage(answer: PrepareAnswer): MembershipPrepareResponse {
  const { reply } = answer;
  const committedEpoch = BigInt(answer.committedEpoch);
  if (reply.kind === 'promise') {
    return {
      promised: true,
      acceptedBallot: reply.accepted === undefined ? undefined : ballotToMessage(reply.accepted.ballot),
      ...(reply.accepted === undefined ? {} : { acceptedState: membershipToMessage(reply.accepted.state) }),
      reason: '',
      committedEpoch,
      promisedBallot: undefined,
    };
  }
  return { promised: false, acceptedBallot: undefined, reason: reply.reason, committedEpoch, promisedBallot: reply.promised === undefined ? undefined : ballotToMessage(reply.promised) };
}

/** `from` names the answering member for a refusal of its answer. */
export function prepareAnswerFromMessage(message: MembershipPrepareResponse, from: string): PrepareAnswer {
  const what = `the MembershipPrepare answer of ${from}`;
  const committedEpoch = epochFromMessage(message.committedEpoch, what, 'committed epoch');
  if (!message.promised) {
    const promised = message.promisedBallot === undefined ? undefined : ballotFromMessage(message.promisedBallot, what);
    return { committedEpoch, reply: { kind: 'refused', reason: message.reason, committedEpoch, ...(promised === undefined ? {} : { promised }) } };
  }
  if ((message.acceptedBallot === undefined) !== (message.acceptedState === undefined)) {
    throw new InvalidRequestError(`${what} is malformed: an accepted state must come with its ballot (${versionHint})`);
  }
  if (message.acceptedBallot === undefined) return { committedEpoch, reply: { kind: 'promise' } };
  return {
    committedEpoch,
    reply: { kind: 'promise', accepted: { ballot: ballotFromMessage(message.acceptedBallot, what), state: membershipFromMessage(message.acceptedState, `the accepted state in ${what}`) } },
  };
}

export function acceptAnswerToMessage(answer: AcceptAnswer): MembershipAcceptResponse {
  const { reply } = answer;
  const committedEpoch = BigInt(answer.committedEpoch);
  if (reply.kind === 'accepted') return { accepted: true, reason: '', committedEpoch, promisedBallot: undefined };
  return { accepted: false, reason: reply.reason, committedEpoch, promisedBallot: reply.promised === undefined ? undefined : ballotToMessage(reply.promised) };
}

export function acceptAnswerFromMessage(message: MembershipAcceptResponse, from: string): AcceptAnswer {
  const what = `the MembershipAccept answer of ${from}`;
  const committedEpoch = epochFromMessage(message.committedEpoch, what, 'committed epoch');
  if (message.accepted) return { committedEpoch, reply: { kind: 'accepted' } };
  const promised = message.promisedBallot === undefined ? undefined : ballotFromMessage(message.promisedBallot, what);
  return { committedEpoch, reply: { kind: 'refused', reason: message.reason, committedEpoch, ...(promised === undefined ? {} : { promised }) } };
}

export function commitAnswerToMessage(answer: CommitAnswer): MembershipCommitResponse {
  return { adopted: answer.adopted, committedEpoch: BigInt(answer.committedEpoch) };
}

export function commitAnswerFromMessage(message: MembershipCommitResponse, from: string): CommitAnswer {
  return { adopted: message.adopted, committedEpoch: epochFromMessage(message.committedEpoch, `the MembershipCommit answer of ${from}`, 'committed epoch') };
}
