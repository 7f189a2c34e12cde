import { murmur3x86_32 } from './hash.js';
import type { Ring, RingRange } from './ring.js';

/**
 * Leaf buckets per ring range. With 3 members x 128 vnodes (384 ranges) that is ~24k leaves:
 * 100k keys put ~4 records in a bucket, so a differing leaf costs a handful of records to
 * exchange, while a full comparison of two in-sync replicas is one root per range.
 */
export const leafBucketsPerRange = 64;
/** Bytes of a digest (root or leaf): 64 bits, so an accidental collision is ~2^-64. */
export const digestBytes = 8;

const seedHigh = 0x9747b28c;
const seedLow = 0x5bd1e995;
const twoTo32 = 2 ** 32;

/** A hash sub-interval (startExclusive, endInclusive] of the 32-bit key-hash circle. */
export interface HashInterval {
  readonly startExclusive: number;
  readonly endInclusive: number;
}

/**
 * One hash tree per ring range, over the records a node stores: range -> 64 leaf buckets ->
 * records (key and version). A leaf is the XOR of its records' 64-bit hashes, so a write updates
 * it in O(1) (XOR out the old version's hash, XOR in the new one); a range's root hashes its
 * leaves. Two replicas compare roots, then leaves of differing ranges, then exchange only the
 * records of differing buckets. Pure: the caller feeds it every change to its records.
 */
export class DigestForest {
  private readonly ranges: RingRange[];
  private readonly leafHigh: Uint32Array;
  private readonly leafLow: Uint32Array;
  private readonly counts: Uint32Array;
  private itemScratch = Buffer.allocUnsafe(256);

  constructor(private readonly ring: Ring) {
    this.ranges = ring.ranges();
    const leaves = this.ranges.length * leafBucketsPerRange;
    this.leafHigh = new Uint32Array(leaves);
    this.leafLow = new Uint32Array(leaves);
    this.counts = new Uint32Array(this.ranges.length);
  }

  get rangeCount(): number {
    return this.ranges.length;
  }

  range(index: number): RingRange {
    return this.ranges[index]!;
  }

  /** Records `key` changing from `oldHeader` to `newHeader` (either absent). */
  apply(keyHash: number, key: Uint8Array, oldHeader: Uint8Array | undefined, newHeader: Uint8Array | undefined): void {
    const range = this.ring.rangeIndexOfHash(keyHash);
    const leaf = range * leafBucketsPerRange + this.bucketOf(range, keyHash);
    if (oldHeader !== undefined) {
      this.xorItem(leaf, key, oldHeader);
      this.counts[range]!--;
    }
    if (newHeader !== undefined) {
      this.xorItem(leaf, key, newHeader);
      this.counts[range]!++;
    }
  }

  /** The leaf bucket of a key hash within its range. */
  bucketOf(range: number, keyHash: number): number {
    const { startExclusive, width } = this.geometry(range);
    const offset = (keyHash - startExclusive - 1 + twoTo32) % twoTo32;
    return Math.floor((offset * leafBucketsPerRange) / width);
  }

  /** The hash interval a bucket covers (may wrap past 2^32 - 1; empty when start == end). */
  bucketInterval(range: number, bucket: number): HashInterval {
    const { startExclusive, width } = this.geometry(range);
    const lo = Math.ceil((bucket * width) / leafBucketsPerRange);
    const hi = Math.ceil(((bucket + 1) * width) / leafBucketsPerRange);
    return { startExclusive: (startExclusive + lo) % twoTo32, endInclusive: (startExclusive + hi) % twoTo32 };
  }

  /** The root digest of a range: a hash of its leaves. */
  root(range: number): Buffer {
    const leaves = this.leafBytes(range);
    const out = Buffer.allocUnsafe(digestBytes);
    out.writeUInt32BE(murmur3x86_32(leaves, seedHigh), 0);
    out.writeUInt32BE(murmur3x86_32(leaves, seedLow), 4);
    return out;
  }

  /** The leaf digests of a range, in bucket order. */
  leaves(range: number): Buffer[] {
    const bytes = this.leafBytes(range);
    return Array.from({ length: leafBucketsPerRange }, (_, b) => bytes.subarray(b * digestBytes, (b + 1) * digestBytes));
  }

  recordCount(range: number): number {
    return this.counts[range]!;
  }

  private leafBytes(range: number): Buffer {
    const out = Buffer.allocUnsafe(leafBucketsPerRange * digestBytes);
    const base = range * leafBucketsPerRange;
    for (let b = 0; b < leafBucketsPerRange; b++) {
      out.writeUInt32BE(this.leafHigh[base + b]!, b * digestBytes);
      out.writeUInt32BE(this.leafLow[base + b]!, b * digestBytes + 4);
    }
    return out;
  }

  private geometry(range: number): { startExclusive: number; width: number } {
    const r = this.ranges[range]!;
    const width = (r.endInclusive - r.startExclusive + twoTo32) % twoTo32 || twoTo32;
    return { startExclusive: r.startExclusive, width };
  }

  private xorItem(leaf: number, key: Uint8Array, header: Uint8Array): void {
    // Runs for every stored record change: hash key | header in a reused buffer, no allocation.
    const length = key.length + header.length;
    if (this.itemScratch.length < length) this.itemScratch = Buffer.allocUnsafe(Math.max(length, 2 * this.itemScratch.length));
    const item = this.itemScratch;
    item.set(key, 0);
    item.set(header, key.length);
    this.leafHigh[leaf] = (this.leafHigh[leaf]! ^ murmur3x86_32(item, seedHigh, length)) >>> 0;
    this.leafLow[leaf] = (this.leafLow[leaf]! ^ murmur3x86_32(item, seedLow, length)) >>> 0;
  }
}

/** Root digest as 16 hex digits, for people. */
export function formatDigest(digest: Uint8Array): string {
  return Buffer.from(digest).toString('hex');
}
