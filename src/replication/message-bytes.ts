/**
 * Byte accounting of node-to-node messages: every request and answer between peers is bounded in
 * bytes, so senders size their batches and answerers their pages with the same upper bounds.
 */

/**
 * Protobuf framing of one `Record` in a repeated field, at most: tag and length of the entry,
 * and of its key and its record (1 tag byte + a length varint of up to 5 bytes, three times).
 */
export const recordFramingBytesMax = 18;

/** Protobuf framing of one key in a repeated bytes field, at most: 1 tag byte + a 5-byte length varint. */
export const keyFramingBytesMax = 6;

/**
 * What a peer message holds besides its records or keys, at most: the caller's id, range and
 * bucket numbers, a resume key (up to 1974 bytes), the wrapping of a stream message. Batches
 * and asked answers are sized this much below a link's message limit.
 */
export const messageOverheadBytesMax = 16 * 1024;

/** Bytes `key` and `record` take as one entry of a message's repeated Record field (an upper bound). */
export function recordMessageBytes(key: Uint8Array, record: Uint8Array): number {
  return key.length + record.length + recordFramingBytesMax;
}

/** Bytes `key` takes as one entry of a message's repeated bytes field (an upper bound). */
export function keyMessageBytes(key: Uint8Array): number {
  return key.length + keyFramingBytesMax;
}

/**
 * How many of `items`, from index `start` on and at most `countMax`, fit in `maxBytes` together
 * as `bytesOf` counts them: at least one when any are left (an item larger than the bound goes
 * alone), none past the end.
 *
 * @example
 * for (let i = 0; i < records.length; ) {
 *   const n = countWithinBytes(records, i, batchMaxBytes, (r) => recordMessageBytes(r.key, r.record));
 *   await send(records.slice(i, i + n));
 *   i += n;
 * }
 */
export function countWithinBytes<T>(items: readonly T[], start: number, maxBytes: number, bytesOf: (item: T) => number, countMax = Infinity): number {
  let bytes = 0;
  let end = start;
  while (end < items.length && end - start < countMax) {
    const next = bytesOf(items[end]!);
    if (end > start && bytes + next > maxBytes) break;
    bytes += next;
    end++;
  }
  return end - start;
}

/** Bytes of records or keys one message may carry on a link that sends at most `messageBytesMax` (at least 1: one item always goes). */
export function payloadBytesMax(messageBytesMax: number): number {
  return Math.max(1, messageBytesMax - messageOverheadBytesMax);
}
