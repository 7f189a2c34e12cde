/**
 * MurmurHash3, x86 32-bit variant (Austin Appleby, public domain). Used to place keys and
 * virtual nodes on the ring: fast, well distributed, and the same on every node and platform.
 */

const c1 = 0xcc9e2d51;
const c2 = 0x1b873593;

/**
 * MurmurHash3 x86_32 of `bytes` as an unsigned 32-bit integer. Allocates nothing: it runs for
 * every request, so it works on 32-bit integers with `Math.imul` and reads bytes in place.
 *
 * @example murmur3x86_32(new TextEncoder().encode('hello')) === 0x248bfa47
 */
export function murmur3x86_32(bytes: Uint8Array, seed = 0, length = bytes.length): number {
  const blocksEnd = length & ~3;
  let h = seed | 0;
  let i = 0;
  for (; i < blocksEnd; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  // Tail: 1..3 remaining bytes, little-endian (if-chain rather than switch fallthrough).
  const tail = length & 3;
  if (tail !== 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[i + 2]! << 16;
    if (tail >= 2) k ^= bytes[i + 1]! << 8;
    k ^= bytes[i]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  // Finalization: mix in the length, then avalanche.
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
