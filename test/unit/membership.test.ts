import { describe, expect, it } from 'vitest';
import { decodeMembership, encodeMembership, reconcileMembership, seedMembership } from '../../src/cluster/membership.js';
import { Ring } from '../../src/cluster/ring.js';

const three = [
  { id: 'n2', peer: 'b:2' },
  { id: 'n1', peer: 'a:1' },
  { id: 'n3', peer: 'c:3' },
];

describe('membership state', () => {
  it('is seeded from the configured members as epoch 1, all normal, sorted by id', () => {
    const state = seedMembership(three);
    expect(state.epoch).toBe(1);
    expect(state.members.map((m) => `${m.id}:${m.state}`)).toEqual(['n1:normal', 'n2:normal', 'n3:normal']);
    expect(decodeMembership(encodeMembership(state))).toEqual(state);
  });

  it('keeps the stored state when the configuration agrees with it, in any order', () => {
    const stored = { ...seedMembership(three), epoch: 7 };
    expect(reconcileMembership(stored, [...three].reverse())).toEqual({ state: stored, ignored: undefined });
  });

  it('keeps the stored state when the configured member list differs, saying how (members change by agreement only)', () => {
    const stored = seedMembership(three);
    const { state, ignored } = reconcileMembership(stored, [three[1]!, three[2]!, { id: 'n4', peer: 'd:4' }]);
    expect(state).toBe(stored);
    expect(ignored).toContain('cluster.members (n1, n3, n4) differs from the stored membership of epoch 1 (n1, n2, n3): the stored membership is used');
    // A different peer address is no difference: it is how this node dials that member (a proxy, NAT).
    expect(reconcileMembership(stored, [three[0]!, three[1]!, { id: 'n3', peer: 'c:30' }])).toEqual({ state: stored, ignored: undefined });
  });

  it('refuses a malformed stored document with the reason', () => {
    expect(() => decodeMembership(Buffer.from(JSON.stringify({ formatVersion: 1, epoch: 0, members: [] })))).toThrow(/stored membership is malformed: epoch/);
    expect(() => decodeMembership(Buffer.from([0xff, 0x00, 0x7b]))).toThrow(/stored membership is not JSON/);
  });
});

describe('Ring.ownedShare', () => {
  it('gives each member a third with 3 members at replication factor 3', () => {
    const ring = new Ring(three);
    for (const m of three) expect(ring.ownedShare(m.id, 3)).toBeCloseTo(1 / 3, 12);
  });

  it('sums to 1 over the members, each near 1/members, and is 0 for a non-member', () => {
    const members = Array.from({ length: 5 }, (_, i) => ({ id: `n${i + 1}` }));
    const ring = new Ring(members);
    for (const rf of [1, 2, 3]) {
      const shares = members.map((m) => ring.ownedShare(m.id, rf));
      expect(shares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
      for (const share of shares) expect(Math.abs(share - 0.2)).toBeLessThan(0.2 * 0.35);
    }
    expect(ring.ownedShare('n9', 3)).toBe(0);
  });

  it('a single member owns everything', () => {
    expect(new Ring([{ id: 'solo' }]).ownedShare('solo', 1)).toBe(1);
  });
});
