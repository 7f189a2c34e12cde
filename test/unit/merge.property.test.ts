import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type Version, type VersionedRecord, compareVersions, formatVersion, mergeRecords } from '../../src/cluster/version.js';

/**
 * Versions from small pools, so equal walls and counters (the tie-break paths) are common.
 * One version is one write, so records are drawn from a pool with distinct versions; a duplicate
 * is a structurally equal copy (the same write delivered again), not the same object.
 */
const arbVersion: fc.Arbitrary<Version> = fc.record({
  wallMs: fc.integer({ min: 0, max: 5 }),
  counter: fc.integer({ min: 0, max: 3 }),
  nodeId: fc.constantFrom('a', 'b', 'node-1', 'node-2'),
});

const arbRecordFor = (version: Version): fc.Arbitrary<VersionedRecord> =>
  fc.oneof(
    fc.uint8Array({ maxLength: 4 }).map((value) => ({ version, tombstone: false, value })),
    fc.constant({ version, tombstone: true, value: new Uint8Array(0) }),
  );

/** A pool of 1..8 records with distinct versions. */
const arbPool: fc.Arbitrary<VersionedRecord[]> = fc
  .uniqueArray(arbVersion, { minLength: 1, maxLength: 8, selector: formatVersion })
  .chain((versions) => fc.tuple(...versions.map(arbRecordFor)));

const copy = (r: VersionedRecord): VersionedRecord => ({ version: { ...r.version }, tombstone: r.tombstone, value: r.value.slice() });

/** Records drawn from a pool with repetition (as copies), plus a permutation of the same list. */
const arbListAndPermutation = arbPool.chain((pool) =>
  fc
    .array(fc.nat({ max: pool.length - 1 }), { minLength: 0, maxLength: 12 })
    .map((picks) => picks.map((i) => copy(pool[i]!)))
    .chain((list) => fc.tuple(fc.constant(list), fc.shuffledSubarray(list, { minLength: list.length, maxLength: list.length }))),
);

const arbThree = arbPool.chain((pool) => fc.tuple(...[0, 1, 2].map(() => fc.constantFrom(...pool).map(copy))));

const fold = (list: readonly VersionedRecord[]): VersionedRecord | undefined =>
  list.reduce<VersionedRecord | undefined>((acc, r) => mergeRecords(acc, r), undefined);

const numRuns = 200;

describe('mergeRecords (properties)', () => {
  it('is idempotent', () => {
    fc.assert(
      fc.property(arbThree, ([a]) => {
        expect(mergeRecords(a, a)).toEqual(a);
        expect(mergeRecords(a, copy(a!))).toEqual(a);
        expect(mergeRecords(mergeRecords(a, a), a)).toEqual(a);
      }),
      { numRuns },
    );
  });

  it('is commutative', () => {
    fc.assert(
      fc.property(arbThree, ([a, b]) => {
        expect(mergeRecords(a, b)).toEqual(mergeRecords(b, a));
      }),
      { numRuns },
    );
  });

  it('is associative', () => {
    fc.assert(
      fc.property(arbThree, ([a, b, c]) => {
        expect(mergeRecords(mergeRecords(a, b), c)).toEqual(mergeRecords(a, mergeRecords(b, c)));
      }),
      { numRuns },
    );
  });

  it('folds any permutation of a list (with duplicates) to the same record: the newest', () => {
    fc.assert(
      fc.property(arbListAndPermutation, ([list, permuted]) => {
        const result = fold(list);
        expect(fold(permuted)).toEqual(result);
        // Applying everything again changes nothing (redelivery).
        expect(fold([...list, ...permuted])).toEqual(result);
        if (list.length === 0) {
          expect(result).toBeUndefined();
        } else {
          const newest = [...list].sort((x, y) => compareVersions(y.version, x.version))[0];
          expect(result).toEqual(newest);
        }
      }),
      { numRuns },
    );
  });
});
