import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DigestForest, leafBucketsPerRange } from '../../src/cluster/digest-tree.js';
import { Ring } from '../../src/cluster/ring.js';

const ring = new Ring([{ id: 'a' }, { id: 'b' }, { id: 'c' }], 16);

function inInterval(h: number, start: number, end: number): boolean {
  if (start === end) return false;
  return start < end ? h > start && h <= end : h > start || h <= end;
}

describe('DigestForest', () => {
  it('places every key hash in the bucket whose interval contains it', () => {
    const forest = new DigestForest(ring);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (h) => {
        const range = ring.rangeIndexOfHash(h);
        const bucket = forest.bucketOf(range, h);
        expect(bucket).toBeGreaterThanOrEqual(0);
        expect(bucket).toBeLessThan(leafBucketsPerRange);
        const { startExclusive, endInclusive } = forest.bucketInterval(range, bucket);
        expect(inInterval(h, startExclusive, endInclusive)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('digests depend on the set of (key, version) only, not on the order of changes', () => {
    const a = new DigestForest(ring);
    const b = new DigestForest(ring);
    const items = Array.from({ length: 200 }, (_, i) => ({ key: Buffer.from(`k${i}`), header: Buffer.from(`v${i}`) }));
    for (const it of items) a.apply(ring.hashKey(it.key), it.key, undefined, it.header);
    for (const it of [...items].reverse()) b.apply(ring.hashKey(it.key), it.key, undefined, it.header);
    for (let r = 0; r < a.rangeCount; r++) expect(a.root(r).equals(b.root(r))).toBe(true);
    // One key changes version on b: exactly its range's root differs, and one leaf in it.
    const k = items[7]!.key;
    const range = ring.rangeIndexOf(k);
    b.apply(ring.hashKey(k), k, items[7]!.header, Buffer.from('newer'));
    for (let r = 0; r < a.rangeCount; r++) expect(a.root(r).equals(b.root(r))).toBe(r !== range);
    const differingLeaves = a.leaves(range).filter((leaf, i) => !leaf.equals(b.leaves(range)[i]!));
    expect(differingLeaves).toHaveLength(1);
    // Changing it back restores equality (XOR leaves are exactly reversible).
    b.apply(ring.hashKey(k), k, Buffer.from('newer'), items[7]!.header);
    expect(a.root(range).equals(b.root(range))).toBe(true);
    expect(a.recordCount(range)).toBe(b.recordCount(range));
  });
});
