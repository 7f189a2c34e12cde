import { describe, expect, it } from 'vitest';
import { ChangeKind, MembershipState as MembershipStateMessage, MemberState as MemberStateMessage } from '../../gen/kvstore/internal/v1/peer.js';
import { sameMembership } from '../../src/cluster/membership-agreement.js';
import { advanceChange, cancelChange, markDead, type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';
import { InvalidRequestError } from '../../src/replication/errors.js';
import {
  acceptAnswerFromMessage,
  acceptAnswerToMessage,
  ballotFromMessage,
  membershipFromMessage,
  membershipToMessage,
  prepareAnswerFromMessage,
  prepareAnswerToMessage,
} from '../../src/replication/membership-messages.js';

/**
 * Membership states and agreement answers through their peer.proto messages: every state the
 * change functions make comes back equal after encoding to bytes and decoding, and a malformed
 * message is refused with InvalidRequestError naming what is wrong.
 */
function ok<T>(result: { state: T } | { refusal: string }): T {
  if ('refusal' in result) throw new Error(result.refusal);
  return result.state;
}

const base = seedMembership([
  { id: 'n1', peer: '10.0.0.1:7000' },
  { id: 'n2', peer: '10.0.0.2:7000' },
  { id: 'n3', peer: '10.0.0.3:7000' },
]);
const added = ok(proposeChange(base, { kind: 'add', id: 'n4', peer: '10.0.0.4:7000' }, 3));
const replaced = ok(proposeChange(base, { kind: 'replace', oldId: 'n2', newId: 'n5', peer: '10.0.0.5:7000' }, 3));
const states: Record<string, MembershipState> = {
  seed: base,
  'add pending': added,
  'add switched': advanceChange(added),
  'add done': advanceChange(advanceChange(added)),
  'replace pending (tokensOf)': replaced,
  'replace done (removed member)': advanceChange(advanceChange(replaced)),
  'cancelled add': ok(cancelChange(added)),
  'mark-dead': ok(markDead(base, 'n3')),
  'mark-dead during a change': ok(markDead(added, 'n2')),
  'empty peer (one node)': seedMembership([{ id: 'solo', peer: '' }]),
};

/** Through the wire: encoded to bytes and decoded, as a peer receives it. */
function carried(state: MembershipState): MembershipStateMessage {
  return MembershipStateMessage.decode(MembershipStateMessage.encode(membershipToMessage(state)).finish());
}

function refusal(message: MembershipStateMessage | undefined): string {
  try {
    membershipFromMessage(message, 'the state of MembershipAccept from n2');
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRequestError);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe('membership messages', () => {
  for (const [name, state] of Object.entries(states)) {
    it(`round-trips a state: ${name}`, () => {
      const back = membershipFromMessage(carried(state), 'test');
      expect(back).toEqual(state);
      expect(sameMembership(back, state)).toBe(true);
    });
  }

  it('reads a last change id of 0 as absent (the same membership)', () => {
    const back = membershipFromMessage(carried({ ...base, lastChangeId: 0 }), 'test');
    expect(back.lastChangeId).toBeUndefined();
    expect(sameMembership(back, { ...base, lastChangeId: 0 })).toBe(true);
  });

  it('refuses malformed states, saying what is wrong', () => {
    const good = membershipToMessage(added);
    expect(refusal(undefined)).toMatch(/the state of MembershipAccept from n2 is malformed: it carries no membership state \(are all members running the same kvstore version\?\)/);
    expect(refusal({ ...good, epoch: 0n })).toMatch(/epoch 0 \(epochs start at 1\)/);
    expect(refusal({ ...good, epoch: 2n ** 60n })).toMatch(/epoch 1152921504606846976 is too large/);
    expect(refusal({ ...good, members: [] })).toMatch(/it lists no members/);
    expect(refusal({ ...good, members: [...good.members, good.members[0]!] })).toMatch(/member n1 is listed twice/);
    expect(refusal({ ...good, members: [{ ...good.members[0]!, id: '' }, ...good.members.slice(1)] })).toMatch(/member 1 has an id of 0 characters/);
    expect(refusal({ ...good, members: [{ ...good.members[0]!, state: MemberStateMessage.MEMBER_STATE_UNSPECIFIED }, ...good.members.slice(1)] })).toMatch(/member n1 has state MEMBER_STATE_UNSPECIFIED/);
    expect(refusal({ ...good, members: [{ ...good.members[0]!, state: 42 as MemberStateMessage }, ...good.members.slice(1)] })).toMatch(/member n1 has state 42/);
    expect(refusal({ ...good, change: { ...good.change!, kind: ChangeKind.CHANGE_KIND_UNSPECIFIED } })).toMatch(/change 1 has kind CHANGE_KIND_UNSPECIFIED/);
    expect(refusal({ ...good, change: { ...good.change!, id: 0n } })).toMatch(/change id 0/);
    expect(refusal({ ...good, change: { ...good.change!, subjects: [] } })).toMatch(/change 1 names no member/);
    expect(refusal({ ...good, change: { ...good.change!, subjects: ['n9'] } })).toMatch(/change 1 names "n9", which is not among the members/);
  });

  it('refuses a ballot without a proposer, and an answer with an accepted state but no ballot', () => {
    expect(() => ballotFromMessage({ counter: 1n, proposer: '' }, 'MembershipPrepare from n2')).toThrow(/MembershipPrepare from n2 is malformed: its ballot names no proposer/);
    expect(() => ballotFromMessage(undefined, 'MembershipPrepare from n2')).toThrow(InvalidRequestError);
    const promise = prepareAnswerToMessage({ committedEpoch: 1, reply: { kind: 'promise', accepted: { ballot: { counter: 3, proposer: 'n2' }, state: added } } });
    expect(() => prepareAnswerFromMessage({ ...promise, acceptedBallot: undefined }, 'n3')).toThrow(/the MembershipPrepare answer of n3 is malformed: an accepted state must come with its ballot/);
  });

  it('round-trips the acceptors answers', () => {
    const answers = [
      { committedEpoch: 1, reply: { kind: 'promise' as const } },
      { committedEpoch: 1, reply: { kind: 'promise' as const, accepted: { ballot: { counter: 3, proposer: 'n2' }, state: added } } },
      { committedEpoch: 1, reply: { kind: 'refused' as const, reason: 'a higher ballot was promised', committedEpoch: 1, promised: { counter: 9, proposer: 'n3' } } },
      { committedEpoch: 4, reply: { kind: 'refused' as const, reason: 'this member is at epoch 4, the proposal is for epoch 2', committedEpoch: 4 } },
    ];
    for (const answer of answers) expect(prepareAnswerFromMessage(prepareAnswerToMessage(answer), 'n2')).toEqual(answer);
    const accepts = [
      { committedEpoch: 1, reply: { kind: 'accepted' as const } },
      { committedEpoch: 1, reply: { kind: 'refused' as const, reason: 'not one step', committedEpoch: 1 } },
    ];
    for (const answer of accepts) expect(acceptAnswerFromMessage(acceptAnswerToMessage(answer), 'n2')).toEqual(answer);
  });
});
