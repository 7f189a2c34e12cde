/** Byte-order range helpers for LMDB range scans (keys compare as unsigned bytes). */

/** The smallest key strictly greater than `key`: key + 0x00. */
export function keyAfter(key: Uint8Array): Buffer {
  const out = Buffer.alloc(key.length + 1);
  out.set(key);
  return out;
}

/**
 * The smallest key greater than every key that starts with `prefix`, or undefined when there is
 * none (empty prefix or all 0xff bytes).
 */
export function prefixEnd(prefix: Uint8Array): Buffer | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const out = Buffer.from(prefix.subarray(0, i + 1));
      out[i]! += 1;
      return out;
    }
  }
  return undefined;
}

/** Range bounds for keys with `prefix` that are strictly after `startAfter` (either may be empty). */
export function scanBounds(prefix: Uint8Array, startAfter: Uint8Array): { start: Buffer; end: Buffer | undefined } {
  const after = startAfter.length > 0 ? keyAfter(startAfter) : Buffer.alloc(0);
  const start = Buffer.compare(after, prefix) > 0 ? after : Buffer.from(prefix);
  return { start, end: prefixEnd(prefix) };
}
