import { murmur3x86_32 } from './hash.js';

/**
 * Consistent-hash ring with virtual nodes. Each member owns `vnodesPerMember` tokens on the
 * 32-bit murmur3 circle; a key belongs to the first token at or after its hash (wrapping), and
 * its preference list is the first n distinct members met walking clockwise from there.
 *
 * The ring depends only on the set of member ids (not their order), so every node that reads the
 * same membership computes the same placement. Adding a member only moves keys to that member.
 */

/** A ring member. Ids are ASCII and unique; they are what the ring hashes. */
export interface RingMember {
  readonly id: string;
  /**
   * Whose vnode names give this member's tokens (default its own id): a replacement takes over
   * a departing member's tokens, so only that member's ranges move (docs/membership.md §4.4).
   */
  readonly tokensOf?: string;
}

/**
 * Virtual nodes per member: at 128, a member's share of the keys deviates from the mean by about
 * 8% (one standard deviation, ~1/sqrt(128)), and stays within ±35% of the mean for 3..10 members
 * (test/unit/ring.property.test.ts checks this over 20,000 random keys; only about 1 random
 * membership in 4,000 has a member outside it), while the ring stays small (6 bytes per token)
 * and quick to build.
 */
export const vnodesPerMemberDefault = 128;
/** Upper bound on vnodes per member: bounds ring memory and build time. */
export const vnodesPerMemberMax = 4096;
/** Members are indexed by a Uint16Array, so at most this many. */
export const ringMembersMax = 0xffff;
/** Seed for hashing keys and vnode names; part of the placement, so never change it. */
export const ringHashSeed = 0;

/**
 * A contiguous arc of the 32-bit hash space owned by one token: hashes h with
 * `startExclusive < h <= endInclusive`, wrapping past 2^32 - 1 to 0 for range 0. When the ring
 * has a single distinct token, its one range has `startExclusive === endInclusive` and covers
 * the whole circle.
 */
export interface RingRange {
  readonly index: number;
  readonly startExclusive: number;
  readonly endInclusive: number;
}

const textEncoder = new TextEncoder();
const twoTo32 = 2 ** 32;

/** Index of the first element of `sorted` that is >= `value`; `sorted.length` if none. */
function lowerBound(sorted: Uint32Array, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function checkHash(h: number): void {
  if (!Number.isInteger(h) || h < 0 || h > 0xffffffff) throw new RangeError(`hash ${h} is not an unsigned 32-bit integer`);
}

/** An immutable ring over a fixed membership. Build a new one when membership changes. */
export class Ring {
  /** Member ids, sorted, so the ring does not depend on the order members were listed in. */
  private readonly ids: readonly string[];
  /** All vnode tokens, ascending; equal tokens ordered by member id. */
  private readonly tokens: Uint32Array;
  /** owners[i] is the index in `ids` of the member owning tokens[i]. */
  private readonly owners: Uint16Array;
  /** Distinct tokens, ascending: range i ends at rangeEnds[i]. */
  private readonly rangeEnds: Uint32Array;
  /**
   * Scratch for preferenceList's distinctness check: seen[m] === epoch means member m is already
   * in the list being built. Reused across calls so a lookup allocates only its result.
   */
  private readonly seen: Uint32Array;
  private epoch = 0;
  /** What determines the placement (see placementKey). */
  private readonly placement: string;

  constructor(members: readonly RingMember[], vnodesPerMember: number = vnodesPerMemberDefault) {
    if (members.length === 0) throw new Error('ring needs at least one member');
    if (members.length > ringMembersMax) throw new RangeError(`ring has ${members.length} members, more than ${ringMembersMax}`);
    if (!Number.isInteger(vnodesPerMember) || vnodesPerMember < 1 || vnodesPerMember > vnodesPerMemberMax) {
      throw new RangeError(`vnodesPerMember ${vnodesPerMember} is not an integer in 1..${vnodesPerMemberMax}`);
    }
    const ids = members.map((m) => m.id).sort();
    const tokenNameOf = new Map(members.map((m) => [m.id, m.tokensOf ?? m.id]));
    for (let i = 0; i < ids.length; i++) {
      if (ids[i]!.length === 0) throw new Error('ring member id is empty');
      if (i > 0 && ids[i] === ids[i - 1]) throw new Error(`duplicate ring member id ${JSON.stringify(ids[i])}`);
    }
    this.ids = ids;
    this.placement = `${vnodesPerMember}:${ids.map((id) => `${id}=${tokenNameOf.get(id)!}`).join(',')}`;

    const total = ids.length * vnodesPerMember;
    const rawTokens = new Uint32Array(total);
    const rawOwners = new Uint16Array(total);
    for (let m = 0; m < ids.length; m++) {
      for (let v = 0; v < vnodesPerMember; v++) {
        const slot = m * vnodesPerMember + v;
        rawTokens[slot] = murmur3x86_32(textEncoder.encode(`${tokenNameOf.get(ids[m]!)!}#${v}`), ringHashSeed);
        rawOwners[slot] = m;
      }
    }
    // Sort by (token, member id); ids are sorted, so member index orders ties by id.
    const order = Array.from({ length: total }, (_, i) => i);
    order.sort((a, b) => rawTokens[a]! - rawTokens[b]! || rawOwners[a]! - rawOwners[b]!);
    this.tokens = new Uint32Array(total);
    this.owners = new Uint16Array(total);
    let distinct = 0;
    for (let i = 0; i < total; i++) {
      this.tokens[i] = rawTokens[order[i]!]!;
      this.owners[i] = rawOwners[order[i]!]!;
      if (i === 0 || this.tokens[i] !== this.tokens[i - 1]) distinct++;
    }
    this.rangeEnds = new Uint32Array(distinct);
    for (let i = 0, r = 0; i < total; i++) {
      if (i === 0 || this.tokens[i] !== this.tokens[i - 1]) this.rangeEnds[r++] = this.tokens[i]!;
    }
    this.seen = new Uint32Array(ids.length);
  }

  /** Equal for two rings exactly when they place every key alike (members, token names, vnodes). */
  placementKey(): string {
    return this.placement;
  }

  /** A 32-bit hash of placementKey (never 0), to tell in a request which ring the asker's ranges index. */
  placementId(): number {
    // Asked on every RangeDigests request and answer: hashed once per ring.
    this.placementIdCache ??= murmur3x86_32(textEncoder.encode(this.placement), ringHashSeed) || 1;
    return this.placementIdCache;
  }
  private placementIdCache: number | undefined;

  /** Member ids, sorted (the ring's canonical order). */
  members(): string[] {
    return [...this.ids];
  }

  /** Number of members. */
  get size(): number {
    return this.ids.length;
  }

  /**
   * The first `n` distinct members clockwise from the key's hash: the replicas of the key,
   * primary first. Throws RangeError unless 1 <= n <= number of members.
   */
  preferenceList(key: Uint8Array, n: number): string[] {
    return this.walk(lowerBound(this.tokens, murmur3x86_32(key, ringHashSeed)), n);
  }

  /** The replicas of every key whose hash is `h` (an unsigned 32-bit integer), primary first. */
  preferenceListOfHash(h: number, n: number): string[] {
    checkHash(h);
    return this.walk(lowerBound(this.tokens, h), n);
  }

  /** The ring's hash of a key (what `rangeIndexOfHash` takes). */
  hashKey(key: Uint8Array): number {
    return murmur3x86_32(key, ringHashSeed);
  }

  /** All ranges, in token order; together they cover the 32-bit hash space exactly once. */
  ranges(): RingRange[] {
    const count = this.rangeEnds.length;
    const out: RingRange[] = new Array(count);
    for (let i = 0; i < count; i++) {
      out[i] = { index: i, startExclusive: this.rangeEnds[(i + count - 1) % count]!, endInclusive: this.rangeEnds[i]! };
    }
    return out;
  }

  /** Number of ranges (distinct tokens). */
  get rangeCount(): number {
    return this.rangeEnds.length;
  }

  /** Index of the range holding the key. */
  rangeIndexOf(key: Uint8Array): number {
    return this.rangeIndexOfHash(murmur3x86_32(key, ringHashSeed));
  }

  /** Index of the range holding hash `h` (an unsigned 32-bit integer). */
  rangeIndexOfHash(h: number): number {
    checkHash(h);
    const i = lowerBound(this.rangeEnds, h);
    return i === this.rangeEnds.length ? 0 : i;
  }

  /** The preference list shared by every key in range `index`. */
  replicasOfRange(index: number, n: number): string[] {
    if (!Number.isInteger(index) || index < 0 || index >= this.rangeEnds.length) {
      throw new RangeError(`range index ${index} not in 0..${this.rangeEnds.length - 1}`);
    }
    return this.walk(lowerBound(this.tokens, this.rangeEnds[index]!), n);
  }

  /**
   * The share of the keys member `id` holds a replica of, divided by `replicationFactor`: the
   * width of the ranges whose preference list includes it over the whole circle, over RF. The
   * members' shares sum to 1; an evenly balanced ring gives each 1/members.
   */
  ownedShare(id: string, replicationFactor: number): number {
    const count = this.rangeEnds.length;
    if (count === 1) return this.ids.includes(id) ? 1 / replicationFactor : 0;
    let width = 0;
    for (let i = 0; i < count; i++) {
      if (!this.replicasOfRange(i, replicationFactor).includes(id)) continue;
      const start = this.rangeEnds[(i + count - 1) % count]!;
      width += (this.rangeEnds[i]! - start + twoTo32) % twoTo32;
    }
    return width / twoTo32 / replicationFactor;
  }

  /** Collects the first n distinct owners clockwise from token position `start` (may be tokens.length). */
  private walk(start: number, n: number): string[] {
    const memberCount = this.ids.length;
    if (!Number.isInteger(n) || n < 1 || n > memberCount) {
      throw new RangeError(`preference list length ${n} not in 1..${memberCount}`);
    }
    const tokenCount = this.tokens.length;
    const result: string[] = [];
    if (n === 1) {
      result.push(this.ids[this.owners[start === tokenCount ? 0 : start]!]!);
      return result;
    }
    this.epoch++;
    if (this.epoch > 0xffffffff) {
      this.epoch = 1;
      this.seen.fill(0);
    }
    const epoch = this.epoch;
    let position = start === tokenCount ? 0 : start;
    // Every member has at least one token, so one lap always finds n distinct members.
    for (let steps = 0; steps < tokenCount; steps++) {
      const owner = this.owners[position]!;
      if (this.seen[owner] !== epoch) {
        this.seen[owner] = epoch;
        result.push(this.ids[owner]!);
        if (result.length === n) return result;
      }
      position = position + 1 === tokenCount ? 0 : position + 1;
    }
    throw new Error(`ring walk found ${result.length} of ${n} members in one lap`);
  }
}

/**
 * The key's preference list on `ring`: the first `n` distinct members clockwise, primary first.
 * The pure form of {@link Ring.preferenceList}.
 */
export function preferenceList(key: Uint8Array, ring: Ring, n: number): string[] {
  return ring.preferenceList(key, n);
}
