import type { Version } from '../cluster/version.js';

/** One record of a replica, decoded, as the checker compares them. */
export interface ReplicaRecord {
  readonly tombstone: boolean;
  readonly value: string;
  readonly version: Version;
}

/** Key (as a string) -> record. */
export type ReplicaContents = Map<string, ReplicaRecord>;
