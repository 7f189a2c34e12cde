/**
 * Record versions: a hybrid-logical-clock timestamp (wall milliseconds, logical counter) with the
 * writing node's id as the final tie-break. Versions are totally ordered, so last-writer-wins is
 * a pure function of two versions.
 *
 * compareVersions, compareVersionedRecords and mergeRecords below are the specification of the
 * merge rule, on decoded records. Production decides on encoded records, without decoding, with
 * compareRecords (storage/merge-rule.ts); test/unit/merge-rule.property.test.ts checks that it
 * agrees with this specification. compareVersions is also the HLC's order (hlc.ts).
 */

/** Largest wall-clock value a version can carry: 48 bits of milliseconds (year 10889). */
export const versionWallMsMax = 2 ** 48 - 1;
/** Largest logical counter: 16 bits, enough for 65,536 writes within one millisecond. */
export const versionCounterMax = 0xffff;

export interface Version {
  /** Milliseconds since the Unix epoch (physical part of the HLC). */
  readonly wallMs: number;
  /** Logical counter that orders events within the same wallMs. */
  readonly counter: number;
  /** Id of the node that issued the version; ASCII (config enforces it), compared bytewise. */
  readonly nodeId: string;
}

/** A stored value or a delete (tombstone), with its version. */
export interface VersionedRecord {
  readonly version: Version;
  readonly tombstone: boolean;
  /** The value; empty for a tombstone. */
  readonly value: Uint8Array;
}

/**
 * Orders two versions: negative if a < b, 0 if equal, positive if a > b. Node ids compare as
 * strings (UTF-16 code units), which for the ASCII ids the codec admits is their byte order.
 */
export function compareVersions(a: Version, b: Version): number {
  if (a.wallMs !== b.wallMs) return a.wallMs < b.wallMs ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  if (a.nodeId === b.nodeId) return 0;
  return a.nodeId < b.nodeId ? -1 : 1;
}

/**
 * Orders two records: by version; two different records with the same version (a collision,
 * which must never happen: every version is issued once) by tombstone (a tombstone wins), then
 * by value, byte by byte (a prefix first). That is the byte order of their encodings
 * (record-codec.ts: flags byte, version, value), which is how storage breaks the tie, so replicas
 * converge even then. 0 only for equal records.
 */
export function compareVersionedRecords(a: VersionedRecord, b: VersionedRecord): number {
  const versions = compareVersions(a.version, b.version);
  if (versions !== 0) return versions;
  if (a.tombstone !== b.tombstone) return a.tombstone ? 1 : -1;
  const n = Math.min(a.value.length, b.value.length);
  for (let i = 0; i < n; i++) if (a.value[i] !== b.value[i]) return a.value[i]! < b.value[i]! ? -1 : 1;
  return a.value.length === b.value.length ? 0 : a.value.length < b.value.length ? -1 : 1;
}

/**
 * Last-writer-wins merge: the greater record by compareVersionedRecords. Ties keep `a`, but a tie
 * is an equal record, so the result is the same either way. The merge is idempotent, commutative
 * and associative, which is why replicas converge whatever the order or number of deliveries.
 * The specification only: production merges encoded records with newerRecord (merge-rule.ts).
 */
export function mergeRecords(a: VersionedRecord | undefined, b: VersionedRecord | undefined): VersionedRecord | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareVersionedRecords(a, b) >= 0 ? a : b;
}

/** The version as text for logs and errors: `wallMs.counter@nodeId`. */
export function formatVersion(v: Version): string {
  return `${v.wallMs}.${v.counter}@${v.nodeId}`;
}
