import { Consistency } from '../../gen/kvstore/v1/kvstore.js';
import type { ConsistencyLevel } from '../cluster/quorum.js';
import { InvalidRequestError } from '../replication/errors.js';

/** The configured limits request checks enforce. */
export interface RequestLimits {
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
}

/**
 * Edge validation for public requests: plain functions (no schema library on the hot path).
 * Each throws InvalidRequestError naming the field and the limit, before anything is written.
 */
export function checkKey(key: Uint8Array, limits: RequestLimits): Buffer {
  if (key.length === 0) throw new InvalidRequestError('key is empty: keys must be 1 or more bytes');
  if (key.length > limits.maxKeyBytes) {
    throw new InvalidRequestError(`key is ${key.length} bytes, over the limit limits.maxKeyBytes = ${limits.maxKeyBytes}`);
  }
  return asBuffer(key);
}

export function checkValue(value: Uint8Array, limits: RequestLimits): Buffer {
  if (value.length > limits.maxValueBytes) {
    throw new InvalidRequestError(`value is ${value.length} bytes, over the limit limits.maxValueBytes = ${limits.maxValueBytes}`);
  }
  return asBuffer(value);
}

/** Maps the request's consistency to a level, CONSISTENCY_UNSPECIFIED to the node's default. */
export function checkConsistency(consistency: Consistency, fallback: ConsistencyLevel): ConsistencyLevel {
  switch (consistency) {
    case Consistency.CONSISTENCY_UNSPECIFIED:
      return fallback;
    case Consistency.CONSISTENCY_ONE:
      return 'one';
    case Consistency.CONSISTENCY_QUORUM:
      return 'quorum';
    case Consistency.CONSISTENCY_ALL:
      return 'all';
    default:
      throw new InvalidRequestError(`consistency ${consistency as number} is not one of UNSPECIFIED (0), ONE (1), QUORUM (2), ALL (3)`);
  }
}

/** Checks a listing's prefix and cursor against the key limit. */
export function checkListRequest(prefix: Uint8Array, startAfter: Uint8Array, limits: RequestLimits): { prefix: Buffer; startAfter: Buffer } {
  if (prefix.length > limits.maxKeyBytes) throw new InvalidRequestError(`prefix is ${prefix.length} bytes, over limits.maxKeyBytes = ${limits.maxKeyBytes}`);
  if (startAfter.length > limits.maxKeyBytes) {
    throw new InvalidRequestError(`start_after is ${startAfter.length} bytes, over limits.maxKeyBytes = ${limits.maxKeyBytes}`);
  }
  return { prefix: asBuffer(prefix), startAfter: asBuffer(startAfter) };
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
