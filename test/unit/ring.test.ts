import { describe, expect, it } from 'vitest';
import { murmur3x86_32 } from '../../src/cluster/hash.js';
import { Ring, type RingMember, preferenceList, vnodesPerMemberDefault } from '../../src/cluster/ring.js';

const enc = new TextEncoder();
const key = (s: string): Uint8Array => enc.encode(s);
const membersOf = (...ids: string[]): RingMember[] => ids.map((id) => ({ id }));

/** A deliberately naive ring: sort (token, id) pairs, scan linearly. The reference for Ring. */
function naiveRing(ids: readonly string[], vnodes: number): (k: Uint8Array, n: number) => string[] {
  const vnodeList = ids.flatMap((id) => Array.from({ length: vnodes }, (_, i) => ({ token: murmur3x86_32(enc.encode(`${id}#${i}`)), id })));
  vnodeList.sort((a, b) => a.token - b.token || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return (k, n) => {
    const h = murmur3x86_32(k);
    let start = vnodeList.findIndex((v) => v.token >= h);
    if (start === -1) start = 0;
    const out: string[] = [];
    for (let i = 0; out.length < n; i++) {
      const { id } = vnodeList[(start + i) % vnodeList.length]!;
      if (!out.includes(id)) out.push(id);
    }
    return out;
  };
}

/** Length of a range's arc in hashes; a lone range covers the whole circle. */
const arcLength = (r: { startExclusive: number; endInclusive: number }): number =>
  r.startExclusive === r.endInclusive ? 2 ** 32 : (r.endInclusive - r.startExclusive + 2 ** 32) % 2 ** 32;

// Two ids whose vnode #0 tokens collide (both hash to 0xf7e364a4), found by search.
const collidingIds = ['n16724', 'n100940'] as const;

describe('Ring construction', () => {
  it('rejects an empty membership, duplicate ids, empty ids and bad vnode counts', () => {
    expect(() => new Ring([])).toThrow(/at least one member/);
    expect(() => new Ring(membersOf('a', 'b', 'a'))).toThrow(/duplicate ring member id "a"/);
    expect(() => new Ring(membersOf(''))).toThrow(/empty/);
    expect(() => new Ring(membersOf('a'), 0)).toThrow(RangeError);
    expect(() => new Ring(membersOf('a'), 1.5)).toThrow(RangeError);
    expect(() => new Ring(membersOf('a'), 1_000_000)).toThrow(RangeError);
  });

  it('lists members sorted, as a copy', () => {
    const ring = new Ring(membersOf('c', 'a', 'b'));
    expect(ring.members()).toEqual(['a', 'b', 'c']);
    ring.members().pop();
    expect(ring.members()).toEqual(['a', 'b', 'c']);
    expect(ring.size).toBe(3);
  });

  it('uses 128 vnodes per member by default', () => {
    expect(vnodesPerMemberDefault).toBe(128);
    expect(new Ring(membersOf('a', 'b')).rangeCount).toBe(256);
  });
});

describe('Ring.preferenceList', () => {
  const ids = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
  const ring = new Ring(membersOf(...ids), 16);
  const naive = naiveRing(ids, 16);

  it('matches a naive reference implementation', () => {
    for (let i = 0; i < 2000; i++) {
      const k = key(`key-${i}`);
      for (const n of [1, 2, 3, 5]) expect(ring.preferenceList(k, n)).toEqual(naive(k, n));
    }
  });

  it('gives every member for n = member count (factor 3 on 3 nodes: everyone holds everything)', () => {
    const three = new Ring(membersOf('a', 'b', 'c'));
    for (let i = 0; i < 200; i++) expect([...three.preferenceList(key(`k${i}`), 3)].sort()).toEqual(['a', 'b', 'c']);
  });

  it('throws RangeError unless 1 <= n <= member count', () => {
    expect(() => ring.preferenceList(key('k'), 0)).toThrow(RangeError);
    expect(() => ring.preferenceList(key('k'), 6)).toThrow(RangeError);
    expect(() => ring.preferenceList(key('k'), 2.5)).toThrow(RangeError);
    expect(() => ring.replicasOfRange(0, 0)).toThrow(RangeError);
  });

  it('works for empty and binary keys', () => {
    for (const k of [new Uint8Array(0), Uint8Array.from([0, 255, 128]), new Uint8Array(1024).fill(7)]) {
      expect(ring.preferenceList(k, 3)).toEqual(naive(k, 3));
    }
  });

  it('has a pure function form', () => {
    expect(preferenceList(key('abc'), ring, 3)).toEqual(ring.preferenceList(key('abc'), 3));
  });

  it('returns a fresh array each call (callers may keep or mutate it)', () => {
    const a = ring.preferenceList(key('abc'), 3);
    a.pop();
    expect(ring.preferenceList(key('abc'), 3)).toHaveLength(3);
  });

  it('single member, single vnode: every key maps to it', () => {
    const solo = new Ring(membersOf('only'), 1);
    expect(solo.preferenceList(key('x'), 1)).toEqual(['only']);
    expect(solo.preferenceList(new Uint8Array(0), 1)).toEqual(['only']);
  });
});

describe('Ring ranges', () => {
  const ids = ['a', 'b', 'c', 'd'];
  const ring = new Ring(membersOf(...ids), 8);
  const ranges = ring.ranges();

  it('tile the 32-bit hash space exactly once, in token order', () => {
    expect(ranges).toHaveLength(ring.rangeCount);
    expect(ranges.length).toBe(32); // 4 × 8 tokens, no collisions among these ids
    ranges.forEach((r, i) => {
      expect(r.index).toBe(i);
      const prev = ranges[(i + ranges.length - 1) % ranges.length]!;
      expect(r.startExclusive).toBe(prev.endInclusive);
      if (i > 0) expect(r.endInclusive).toBeGreaterThan(prev.endInclusive);
    });
    expect(ranges.reduce((sum, r) => sum + arcLength(r), 0)).toBe(2 ** 32);
  });

  it('rangeIndexOfHash respects the (start, end] boundaries, wrapping for range 0', () => {
    for (const r of ranges) {
      expect(ring.rangeIndexOfHash(r.endInclusive)).toBe(r.index);
      expect(ring.rangeIndexOfHash((r.startExclusive + 1) % 2 ** 32)).toBe(r.index);
      expect(ring.rangeIndexOfHash(r.startExclusive)).toBe((r.index + ranges.length - 1) % ranges.length);
    }
    expect(ring.rangeIndexOfHash(0)).toBe(0); // 0 <= every token, so hash 0 is always in range 0
    expect(ring.rangeIndexOfHash(0xffffffff)).toBe(ranges.at(-1)!.endInclusive === 0xffffffff ? ranges.length - 1 : 0);
  });

  it('rangeIndexOfHash rejects values that are not unsigned 32-bit integers', () => {
    expect(() => ring.rangeIndexOfHash(-1)).toThrow(RangeError);
    expect(() => ring.rangeIndexOfHash(2 ** 32)).toThrow(RangeError);
    expect(() => ring.rangeIndexOfHash(0.5)).toThrow(RangeError);
  });

  it('replicasOfRange is the preference list of every key in the range', () => {
    for (let i = 0; i < 2000; i++) {
      const k = key(`key-${i}`);
      const index = ring.rangeIndexOf(k);
      expect(index).toBe(ring.rangeIndexOfHash(ring.hashKey(k)));
      const r = ranges[index]!;
      const h = ring.hashKey(k);
      const inside = r.startExclusive < r.endInclusive ? h > r.startExclusive && h <= r.endInclusive : h > r.startExclusive || h <= r.endInclusive;
      expect(inside).toBe(true);
      for (const n of [1, 2, 4]) expect(ring.replicasOfRange(index, n)).toEqual(ring.preferenceList(k, n));
    }
  });

  it('replicasOfRange rejects an unknown range index', () => {
    expect(() => ring.replicasOfRange(-1, 1)).toThrow(RangeError);
    expect(() => ring.replicasOfRange(ranges.length, 1)).toThrow(RangeError);
  });

  it('a single distinct token gives one range covering the whole circle', () => {
    const solo = new Ring(membersOf('only'), 1);
    const [only] = solo.ranges();
    expect(solo.ranges()).toHaveLength(1);
    expect(only!.startExclusive).toBe(only!.endInclusive);
    expect(arcLength(only!)).toBe(2 ** 32);
    expect(solo.rangeIndexOfHash(0)).toBe(0);
    expect(solo.rangeIndexOfHash(0xffffffff)).toBe(0);
    expect(solo.replicasOfRange(0, 1)).toEqual(['only']);
  });

  it('colliding tokens form one range, owned in member-id order', () => {
    const [x, y] = collidingIds;
    expect(murmur3x86_32(enc.encode(`${x}#0`))).toBe(murmur3x86_32(enc.encode(`${y}#0`)));
    for (const order of [[x, y, 'z'], ['z', y, x]]) {
      const ring3 = new Ring(membersOf(...order), 1);
      expect(ring3.ranges()).toHaveLength(2);
      const shared = ring3.rangeIndexOfHash(0xf7e364a4);
      expect(ring3.replicasOfRange(shared, 3)).toEqual(['n100940', 'n16724', 'z']);
      const naive3 = naiveRing([x, y, 'z'], 1);
      for (let i = 0; i < 200; i++) {
        const k = key(`k${i}`);
        expect(ring3.preferenceList(k, 3)).toEqual(naive3(k, 3));
      }
    }
  });
});
