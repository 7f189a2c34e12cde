import type { Version, VersionedRecord } from '../cluster/version.js';

/**
 * Binary encoding of a stored record, also used on the wire between peers (so a record is
 * encoded once, by its coordinator, and stored byte-for-byte by every replica):
 *
 *   byte 0        codec version (high nibble, currently 1) | flags (bit 0: tombstone)
 *   bytes 1..6    version wall clock, milliseconds, unsigned 48-bit big-endian
 *   bytes 7..8    version counter, unsigned 16-bit big-endian
 *   byte 9        length n of the writer's node id (1..255)
 *   bytes 10..    node id (ASCII), then the value (rest of the buffer; empty for a tombstone)
 *
 * This module is the only one that knows these offsets: everything else reads a record through
 * the functions below. Which of two records wins is decided by compareRecords (merge-rule.ts).
 */

const codecVersion = 1;
const flagTombstone = 0x01;
/** Bytes before the node id: flags, 6 wall bytes, 2 counter bytes, 1 id-length byte. */
export const recordHeaderBytesFixed = 10;
/** Node ids are at most this long, so their length fits in one byte. */
export const nodeIdBytesMax = 255;

export class RecordDecodeError extends Error {}

export function encodeRecord(record: VersionedRecord): Buffer {
  const { version, tombstone, value } = record;
  const idLength = version.nodeId.length;
  if (idLength === 0 || idLength > nodeIdBytesMax) throw new Error(`node id length ${idLength} out of range`);
  // ASCII only (config admits no other ids): latin1 would silently keep the low byte of a wider
  // character, so two different ids could encode alike and decode as neither. With ASCII every
  // id round-trips and its string order (compareVersions) is its byte order (compareRecords).
  // An ASCII string is exactly as long in UTF-8 as in UTF-16 code units.
  if (Buffer.byteLength(version.nodeId, 'utf8') !== idLength) throw new Error(`node id ${JSON.stringify(version.nodeId)} is not ASCII`);
  const out = Buffer.allocUnsafe(recordHeaderBytesFixed + idLength + value.length);
  out[0] = (codecVersion << 4) | (tombstone ? flagTombstone : 0);
  out.writeUIntBE(version.wallMs, 1, 6);
  out.writeUInt16BE(version.counter, 7);
  out[9] = idLength;
  out.write(version.nodeId, recordHeaderBytesFixed, idLength, 'latin1');
  if (value.length > 0) out.set(value, recordHeaderBytesFixed + idLength);
  return out;
}

function checkHeader(buf: Uint8Array): number {
  if (buf.length < recordHeaderBytesFixed + 1 || buf[0]! >> 4 !== codecVersion) {
    throw new RecordDecodeError(`not a kvstore record (length ${buf.length}, first byte ${buf[0]})`);
  }
  const idLength = buf[9]!;
  if (idLength === 0 || buf.length < recordHeaderBytesFixed + idLength) {
    throw new RecordDecodeError(`truncated kvstore record (length ${buf.length})`);
  }
  return idLength;
}

function asBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Decodes only the version and tombstone flag: enough for LWW decisions and key listings. */
export function decodeRecordHeader(buf: Uint8Array): { version: Version; tombstone: boolean } {
  const idLength = checkHeader(buf);
  const b = asBuffer(buf);
  return {
    version: {
      wallMs: b.readUIntBE(1, 6),
      counter: b.readUInt16BE(7),
      nodeId: b.toString('latin1', recordHeaderBytesFixed, recordHeaderBytesFixed + idLength),
    },
    tombstone: (b[0]! & flagTombstone) !== 0,
  };
}

/** Decodes a whole record. The value is a view into `buf`, not a copy. */
export function decodeRecord(buf: Uint8Array): VersionedRecord {
  const header = decodeRecordHeader(buf);
  const valueStart = recordHeaderBytesFixed + buf[9]!;
  return { ...header, value: asBuffer(buf).subarray(valueStart) };
}

/** Length of the version header (flags, clock, node id) of an encoded record: where its value starts. */
export function recordHeaderBytes(buf: Uint8Array): number {
  return recordHeaderBytesFixed + checkHeader(buf);
}

/**
 * The version header (flags, clock, node id) of an encoded record, without the value: a view,
 * not a copy. A header is itself accepted wherever a record is read for its version.
 */
export function recordHeader(buf: Uint8Array): Buffer {
  return asBuffer(buf).subarray(0, recordHeaderBytes(buf));
}

/** The version's wall clock (Unix ms) of an encoded record, without decoding the rest. */
export function recordWallMs(buf: Uint8Array): number {
  checkHeader(buf);
  return asBuffer(buf).readUIntBE(1, 6);
}

/** Whether the encoded record is a tombstone, without decoding it. */
export function isTombstoneRecord(buf: Uint8Array): boolean {
  checkHeader(buf);
  return (buf[0]! & flagTombstone) !== 0;
}

/** The value bytes of an encoded record (a view, not a copy). */
export function recordValue(buf: Uint8Array): Buffer {
  const idLength = checkHeader(buf);
  return asBuffer(buf).subarray(recordHeaderBytesFixed + idLength);
}

/**
 * Orders two encoded records (or headers) by version without allocating: wall and counter are
 * big-endian in bytes 1..8, so a byte comparison orders them; the node id breaks ties bytewise.
 * The byte half of the merge rule: call compareRecords (merge-rule.ts), not this, to decide
 * which record wins.
 */
export function compareEncodedVersions(a: Uint8Array, b: Uint8Array): number {
  const idA = checkHeader(a);
  const idB = checkHeader(b);
  const ba = asBuffer(a);
  const bb = asBuffer(b);
  const clock = ba.compare(bb, 1, 9, 1, 9);
  if (clock !== 0) return clock;
  return ba.compare(bb, recordHeaderBytesFixed, recordHeaderBytesFixed + idB, recordHeaderBytesFixed, recordHeaderBytesFixed + idA);
}
