import { compareEncodedVersions } from './record-codec.js';

/**
 * The merge rule (last-writer-wins) on encoded records: every production decision about which
 * of two records (or version headers) is newer goes through compareRecords. The bytes belong to
 * record-codec.ts; the rule belongs here.
 *
 * Its specification is compareVersions / compareVersionedRecords / mergeRecords in
 * cluster/version.ts, on decoded records; test/unit/merge-rule.property.test.ts checks that the
 * two agree on arbitrary records, and that the order is a total order whose merge is
 * commutative, associative and idempotent. The encoded form is what production uses because it
 * decides without decoding (no node-id string, no object) on the write path.
 */

/**
 * |compareRecords(a, b)| for two records whose versions are equal but whose bytes differ: a
 * version collision, which must never happen (every version is issued once). The versions of
 * records that differ otherwise compare as ±1.
 */
export const versionCollisionOrder = 2;

/**
 * Orders two encoded records: negative if `a` loses to `b`, 0 if they are the same bytes,
 * positive if `a` wins. By version first (wall, counter, node id: see record-codec.ts); two
 * different records with the same version (a collision) are ordered byte-wise — the flags byte
 * first (a tombstone beats a value), then the values — so that replicas converge whichever of
 * them they saw first. Collisions answer ±versionCollisionOrder (see isVersionCollision).
 *
 * A version header (recordHeader) orders like its record up to the value, which it lacks: compare
 * a header with a header (recordHeader(record)), never with a whole record, or a header of the
 * very same record would lose to it.
 */
export function compareRecords(a: Uint8Array, b: Uint8Array): number {
  const versions = compareEncodedVersions(a, b);
  if (versions !== 0) return versions < 0 ? -1 : 1;
  const bytes = Buffer.compare(a, b);
  return bytes === 0 ? 0 : bytes < 0 ? -versionCollisionOrder : versionCollisionOrder;
}

/** Whether a compareRecords result says the two records collide: same version, different bytes. */
export function isVersionCollision(order: number): boolean {
  return order === versionCollisionOrder || order === -versionCollisionOrder;
}

/** The winner of two encoded records (either may be absent): `b` only if it is strictly newer. */
export function newerRecord<T extends Uint8Array>(a: T | undefined, b: T | undefined): T | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareRecords(b, a) > 0 ? b : a;
}
