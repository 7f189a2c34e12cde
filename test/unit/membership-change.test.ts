import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/common/rng.js';
import { advanceChange, cancelChange, type ChangeRequest, type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';
import { Ring } from '../../src/cluster/ring.js';
import { RingView, writeSetsSatisfied } from '../../src/cluster/ring-view.js';
import { planTransfers, transferShares } from '../../src/cluster/transfer-plan.js';

/**
 * The pure core of membership changes (docs/membership.md §2.1, §3, §4; plan step 1): change
 * proposals and their refusals, the phases, the ring views they give, and the transfer plan.
 * Random memberships are drawn from a printed seed (KVSTORE_TEST_MEMBERSHIP_SEED replays one).
 */
const seed = Number(process.env.KVSTORE_TEST_MEMBERSHIP_SEED ?? 20261201);
const placement = { replicationFactor: 3, vnodesPerMember: 128 };

function cluster(n: number): MembershipState {
  return seedMembership(Array.from({ length: n }, (_, i) => ({ id: `n${i + 1}`, peer: `10.0.0.${i + 1}:7000` })));
}

function propose(state: MembershipState, request: ChangeRequest): MembershipState {
  const result = proposeChange(state, request, placement.replicationFactor);
  if ('refusal' in result) throw new Error(result.refusal);
  return result.state;
}

describe('membership changes: proposals and phases', () => {
  it('add goes pending -> switched -> done, one epoch each, the joiner normal at the end', () => {
    const pending = propose(cluster(3), { kind: 'add', id: 'n4', peer: '10.0.0.4:7000' });
    expect(pending.epoch).toBe(2);
    expect(pending.change).toEqual({ id: 1, kind: 'add', phase: 'pending', subjects: ['n4'] });
    expect(pending.members.find((m) => m.id === 'n4')?.state).toBe('joining');
    const switched = advanceChange(pending);
    expect([switched.epoch, switched.change?.phase]).toEqual([3, 'switched']);
    const done = advanceChange(switched);
    expect(done.epoch).toBe(4);
    expect(done.change).toBeUndefined();
    expect(done.members.map((m) => m.state)).toEqual(['normal', 'normal', 'normal', 'normal']);
    expect(done.lastChangeId).toBe(1);
  });

  it('one change at a time: a second is refused, naming the one in progress', () => {
    const pending = propose(cluster(4), { kind: 'add', id: 'n5', peer: '10.0.0.5:7000' });
    const second = proposeChange(pending, { kind: 'remove', id: 'n1' }, 3);
    expect(second).toEqual({ refusal: expect.stringContaining('change 1: add n5 (10.0.0.5:7000), phase pending is in progress') });
  });

  it('refuses what cannot be done, saying why', () => {
    const three = cluster(3);
    const refusal = (state: MembershipState, request: ChangeRequest) => {
      const result = proposeChange(state, request, 3);
      return 'refusal' in result ? result.refusal : 'accepted';
    };
    expect(refusal(three, { kind: 'remove', id: 'n2' })).toMatch(/would leave 2 members for replication factor 3/);
    expect(refusal(three, { kind: 'remove', id: 'n9' })).toMatch(/"n9" is not a member/);
    expect(refusal(three, { kind: 'add', id: 'n1', peer: '10.0.0.9:7000' })).toMatch(/already a member/);
    expect(refusal(three, { kind: 'add', id: 'n4', peer: '10.0.0.1:7000' })).toMatch(/already member n1's/);
    expect(refusal(three, { kind: 'add', id: 'n 4', peer: '10.0.0.4:7000' })).toMatch(/must be 1-64 ASCII/);
    expect(refusal(three, { kind: 'add', id: 'n4', peer: 'nowhere' })).toMatch(/must be host:port/);
    // Removed ids are never reused.
    const four = advanceChange(advanceChange(propose(cluster(3), { kind: 'add', id: 'n4', peer: '10.0.0.4:7000' })));
    const without = advanceChange(advanceChange(propose(four, { kind: 'remove', id: 'n2' })));
    expect(without.members.find((m) => m.id === 'n2')?.state).toBe('removed');
    expect(refusal(without, { kind: 'add', id: 'n2', peer: '10.0.0.2:7000' })).toMatch(/was removed earlier; ids are never reused/);
  });

  it('cancel undoes a pending change (epoch + 1), and refuses once reads have switched', () => {
    const pending = propose(cluster(3), { kind: 'add', id: 'n4', peer: '10.0.0.4:7000' });
    const cancelled = cancelChange(pending);
    expect('state' in cancelled && cancelled.state.epoch).toBe(3);
    expect('state' in cancelled && cancelled.state.members.find((m) => m.id === 'n4')?.state).toBe('removed');
    expect(cancelChange(advanceChange(pending))).toEqual({ refusal: expect.stringContaining('has switched reads to the new owners') });
  });
});

describe('membership changes: ring views and transfers', () => {
  it(`adding a member: only it receives ranges, about RF/(n+1) of the circle, each from the member it displaces (seed ${seed})`, () => {
    const rng = new Rng(seed);
    for (let round = 0; round < 6; round++) {
      const n = 3 + rng.nextInt(5);
      const joiner = `j${rng.nextInt(1_000_000)}`;
      const pending = propose(cluster(n), { kind: 'add', id: joiner, peer: '10.0.1.1:7000' });
      const view = RingView.from(pending, placement);
      const transfers = planTransfers(pending, view, placement.vnodesPerMember);
      expect(new Set(transfers.map((t) => t.receiver))).toEqual(new Set([joiner]));
      const share = transferShares(transfers).get(joiner)!;
      // The joiner ends up replicating about RF / (n + 1) of the circle (vnode variance: ±35%).
      expect(Math.abs(share - 3 / (n + 1))).toBeLessThan((3 / (n + 1)) * 0.35);
      expect(share).toBeCloseTo(view.newRing.ownedShare(joiner, 3) * 3, 9);
      for (const t of transfers) {
        const before = view.oldRing.preferenceListOfHash(t.range.endInclusive, 3);
        // First source: the member the joiner displaces (not in the new set); then the rest of the old set.
        expect(view.newRing.preferenceListOfHash(t.range.endInclusive, 3)).not.toContain(t.sources[0]);
        expect([...t.sources].sort()).toEqual([...before].sort());
      }
    }
  });

  it('replacing a member moves only its ranges, all to its replacement, placements otherwise unchanged', () => {
    const five = cluster(5);
    const pending = propose(five, { kind: 'replace', oldId: 'n3', newId: 'n6', peer: '10.0.0.6:7000' });
    const view = RingView.from(pending, placement);
    const transfers = planTransfers(pending, view, placement.vnodesPerMember);
    expect(new Set(transfers.map((t) => t.receiver))).toEqual(new Set(['n6']));
    for (const t of transfers) expect(t.sources[0]).toBe('n3');
    const before = new Ring(five.members, placement.vnodesPerMember);
    expect(transferShares(transfers).get('n6')).toBeCloseTo(before.ownedShare('n3', 3) * 3, 9);
    // Every key keeps its replicas, with n6 in n3's place.
    for (const range of before.ranges().slice(0, 200)) {
      const old = before.preferenceListOfHash(range.endInclusive, 3).map((id) => (id === 'n3' ? 'n6' : id));
      expect(view.newRing.preferenceListOfHash(range.endInclusive, 3)).toEqual(old);
    }
    // With n3 dead it is never a source: the survivors of each range are.
    for (const t of planTransfers(pending, view, placement.vnodesPerMember, new Set(['n3']))) {
      expect(t.sources).not.toContain('n3');
      expect(t.sources.length).toBe(2);
    }
  });

  it('removing a member: its ranges go to the others, each from it first', () => {
    const pending = propose(cluster(5), { kind: 'remove', id: 'n2' });
    const view = RingView.from(pending, placement);
    const transfers = planTransfers(pending, view, placement.vnodesPerMember);
    expect(transfers.length).toBeGreaterThan(0);
    for (const t of transfers) {
      expect(t.receiver).not.toBe('n2');
      expect(t.sources[0]).toBe('n2');
    }
    const total = [...transferShares(transfers).values()].reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(view.oldRing.ownedShare('n2', 3) * 3, 9);
  });

  it('reads use the old ring while pending and the new one once switched; writes need W of each ring during the change', () => {
    const pending = propose(cluster(3), { kind: 'add', id: 'n4', peer: '10.0.0.4:7000' });
    const key = Buffer.from('some key');
    const pendingView = RingView.from(pending, placement);
    const switchedView = RingView.from(advanceChange(pending), placement);
    const doneView = RingView.from(advanceChange(advanceChange(pending)), placement);
    expect(pendingView.readReplicas(key)).toEqual(pendingView.oldRing.preferenceList(key, 3));
    expect(switchedView.readReplicas(key)).toEqual(switchedView.newRing.preferenceList(key, 3));
    expect(pendingView.writeSets(key)).toHaveLength(2);
    expect(doneView.writeSets(key)).toHaveLength(1);
    expect(doneView.phase).toBe('normal');
    // {n1,n2,n3} -> e.g. {n4,n2,n3}: two acks from the shared members satisfy both sets; one does not.
    const [before, after] = pendingView.writeSets(key) as [string[], string[]];
    const shared = before.filter((id) => after.includes(id));
    if (shared.length >= 2) expect(writeSetsSatisfied([before, after], new Set(shared.slice(0, 2)), 2)).toBe(true);
    expect(writeSetsSatisfied([before, after], new Set([before[0]!]), 2)).toBe(false);
  });
});

describe('mark-dead (§2.5)', () => {
  it('marks the member dead at the next epoch, keeps it on the ring, and leaves it out of the quorum', async () => {
    const { markDead } = await import('../../src/cluster/membership.js');
    const { quorumOf } = await import('../../src/cluster/membership-agreement.js');
    const start = cluster(3);
    const result = markDead(start, 'n3');
    if ('refusal' in result) throw new Error(result.refusal);
    expect(result.state.epoch).toBe(2);
    expect(result.state.members.find((m) => m.id === 'n3')).toMatchObject({ state: 'normal', dead: true });
    expect(quorumOf(start, result.state)).toEqual(['n1', 'n2']);
    expect(RingView.from(result.state, placement).readReplicas(Buffer.from('k')).length).toBe(3);
  });

  it('refuses a second mark, an unknown member, and one that would leave no live majority', async () => {
    const { markDead } = await import('../../src/cluster/membership.js');
    const once = markDead(cluster(5), 'n5');
    if ('refusal' in once) throw new Error(once.refusal);
    expect(markDead(once.state, 'n5')).toEqual({ refusal: 'n5 is already marked dead' });
    expect(markDead(once.state, 'n9')).toEqual({ refusal: '"n9" is not a member' });
    const twice = markDead(once.state, 'n4');
    if ('refusal' in twice) throw new Error(twice.refusal);
    expect(markDead(twice.state, 'n3')).toEqual({ refusal: expect.stringContaining('would leave 2 live members of 5, not a majority') });
    expect(markDead(cluster(2), 'n2')).toEqual({ refusal: expect.stringContaining('not a majority') });
  });
});
