import { describe, expect, it } from 'vitest';
import { decodeAcceptorRecord, describeTransition, encodeAcceptorRecord, isLegalTransition } from '../../src/cluster/membership-agreement.js';
import { advanceChange, cancelChange, markDead, type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';

/**
 * isLegalTransition (docs/membership.md §2.2 step 3): an acceptor accepts only a state that one
 * of the pure steps makes from its committed state, at epoch + 1, and says why not otherwise.
 * Also the acceptor's persisted record and the words a lost race is reported in.
 */
function ok(result: { state: MembershipState } | { refusal: string }): MembershipState {
  if ('refusal' in result) throw new Error(result.refusal);
  return result.state;
}

const base = seedMembership(['n1', 'n2', 'n3', 'n4'].map((id, i) => ({ id, peer: `10.0.0.${i + 1}:7000` })));
const added = ok(proposeChange(base, { kind: 'add', id: 'n5', peer: '10.0.0.5:7000' }, 3));
const replaced = ok(proposeChange(base, { kind: 'replace', oldId: 'n2', newId: 'n6', peer: '10.0.0.6:7000' }, 3));

describe('isLegalTransition', () => {
  it('allows every step the change functions make', () => {
    const steps: [MembershipState, MembershipState][] = [
      [base, added],
      [base, ok(proposeChange(base, { kind: 'remove', id: 'n4' }, 3))],
      [base, replaced],
      [added, advanceChange(added)],
      [advanceChange(added), advanceChange(advanceChange(added))],
      [replaced, advanceChange(replaced)],
      [added, ok(cancelChange(added))],
      [base, ok(markDead(base, 'n3'))],
      [added, ok(markDead(added, 'n5'))],
    ];
    for (const [from, to] of steps) expect(isLegalTransition(from, to, 3), JSON.stringify(to)).toBeUndefined();
  });

  it('refuses a state that is not at epoch + 1', () => {
    expect(isLegalTransition(base, advanceChange(added))).toBe('epoch 3 does not follow epoch 1: each step raises the epoch by one');
    expect(isLegalTransition(base, base)).toBe('epoch 1 does not follow epoch 1: each step raises the epoch by one');
  });

  it('refuses two members changed in one step, naming them', () => {
    const two: MembershipState = { ...base, epoch: 2, members: base.members.map((m) => (m.id === 'n2' ? { ...m, state: 'leaving' as const } : m.id === 'n3' ? { ...m, dead: true as const } : m)) };
    expect(isLegalTransition(base, two)).toBe(
      'the state for epoch 2 is not one membership step from epoch 1 (members n2, n3 changed); a step is one add, remove, replace, advance, cancel or mark-dead',
    );
    const moved: MembershipState = { ...advanceChange(added), members: advanceChange(added).members.map((m) => (m.id === 'n1' ? { ...m, peer: '10.0.0.9:7000' } : m)) };
    // A peer address is how each node dials a member (it may differ per node): not part of a step.
    expect(isLegalTransition(added, moved)).toBeUndefined();
    const noChange: MembershipState = { ...base, epoch: 2 };
    expect(isLegalTransition(base, noChange)).toMatch(/nothing but the epoch changed/);
    const joinedNormal: MembershipState = { ...added, members: added.members.map((m) => (m.id === 'n5' ? { ...m, state: 'normal' as const } : m)) };
    expect(isLegalTransition(base, joinedNormal)).toMatch(/not one membership step/);
  });

  it('answers the refusal of the step the state looks like', () => {
    // A second change while one is in progress.
    const second: MembershipState = { ...added, epoch: 3, change: { id: 2, kind: 'remove', phase: 'pending', subjects: ['n4'] }, lastChangeId: 2, members: added.members.map((m) => (m.id === 'n4' ? { ...m, state: 'leaving' as const } : m)) };
    expect(isLegalTransition(added, second)).toMatch(/^change 1: add n5 \(10\.0\.0\.5:7000\), phase pending is in progress/);
    // A removal below the replication factor.
    const three = seedMembership(['n1', 'n2', 'n3'].map((id) => ({ id, peer: `${id}:1` })));
    const removal = ok(proposeChange(three, { kind: 'remove', id: 'n3' }, 2));
    expect(isLegalTransition(three, removal, 2)).toBeUndefined();
    expect(isLegalTransition(three, removal, 3)).toBe('removing n3 would leave 2 members for replication factor 3: add a member first');
    // A mark-dead without a live majority.
    const pair = seedMembership([{ id: 'a', peer: 'a:1' }, { id: 'b', peer: 'b:1' }]);
    const forged: MembershipState = { ...pair, epoch: 2, members: pair.members.map((m) => (m.id === 'b' ? { ...m, dead: true as const } : m)) };
    expect(isLegalTransition(pair, forged)).toMatch(/marking b dead would leave 1 live members of 2, not a majority/);
  });

  it('describes the step that won a race', () => {
    expect(describeTransition(base, ok(markDead(base, 'n3')))).toBe('mark-dead n3');
    expect(describeTransition(base, added)).toBe('change 1: add n5 (10.0.0.5:7000), phase pending');
    expect(describeTransition(added, advanceChange(added))).toBe('change 1: add n5 (10.0.0.5:7000), phase pending advanced to switched');
    expect(describeTransition(added, ok(cancelChange(added)))).toBe('change 1: add n5 (10.0.0.5:7000), phase pending cancelled');
    expect(describeTransition(advanceChange(added), advanceChange(advanceChange(added)))).toBe('change 1: add n5 (10.0.0.5:7000), phase switched completed');
  });
});

describe('acceptor record', () => {
  it('round-trips, and refuses a damaged one rather than forget a promise', () => {
    const record = { epoch: 2, promised: { counter: 4, proposer: 'n2' }, accepted: { ballot: { counter: 3, proposer: 'n1' }, state: replaced } };
    expect(decodeAcceptorRecord(encodeAcceptorRecord(record))).toEqual(record);
    expect(decodeAcceptorRecord(encodeAcceptorRecord({ epoch: 5 }))).toEqual({ epoch: 5 });
    expect(() => decodeAcceptorRecord(Buffer.from('{"formatVersion":1,"epoch":2,"promised":{"counter":-1}}'))).toThrow(/stored membership acceptor state is malformed: promised.counter/);
    expect(() => decodeAcceptorRecord(Buffer.from('not json'))).toThrow(/not JSON/);
    expect(() => decodeAcceptorRecord(Buffer.from('{"formatVersion":1,"epoch":2,"accepted":{"ballot":{"counter":1,"proposer":"n1"},"state":{"epoch":2}}}'))).toThrow(/stored membership is malformed/);
  });
});
