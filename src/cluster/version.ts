/**
 * Record versions: a hybrid-logical-clock timestamp (wall milliseconds, logical counter) with the
 * writing node's id as the final tie-break. Versions are totally ordered, so last-writer-wins is
 * a pure function of two versions.
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

/** Orders two versions: negative if a < b, 0 if equal, positive if a > b. */
export function compareVersions(a: Version, b: Version): number {
  if (a.wallMs !== b.wallMs) return a.wallMs < b.wallMs ? -1 : 1;
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  if (a.nodeId === b.nodeId) return 0;
  return a.nodeId < b.nodeId ? -1 : 1;
}

/**
 * Last-writer-wins merge: the record with the higher version. Ties (same version) keep `a`,
 * which is only possible for the same write, so the result is the same either way. The merge is
 * idempotent, commutative and associative, which is why replicas converge whatever the order or
 * number of deliveries.
 */
export function mergeRecords(a: VersionedRecord | undefined, b: VersionedRecord | undefined): VersionedRecord | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareVersions(a.version, b.version) >= 0 ? a : b;
}

/** The version as text for logs and errors: `wallMs.counter@nodeId`. */
export function formatVersion(v: Version): string {
  return `${v.wallMs}.${v.counter}@${v.nodeId}`;
}
