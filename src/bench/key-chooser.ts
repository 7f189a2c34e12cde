/**
 * Which key the next operation touches: uniform over the key space, or zipfian (a few hot keys
 * get most of the traffic), as in YCSB.
 *
 * The zipfian generator is YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating
 * billion-record synthetic databases", SIGMOD 1994): it draws a popularity *rank* in O(1) from a
 * precomputed zeta(n, theta). Rank 0 is the hottest. Like YCSB's `ScrambledZipfianGenerator`, the
 * rank is then mapped to a key index by a seeded pseudo-random permutation of [0, n), so the hot
 * keys are scattered over the whole key space (and over the hash ring and LMDB pages) instead of
 * being the lowest indexes. Unlike YCSB's FNV-hash-then-modulo, the permutation is a bijection:
 * no two ranks collide, so the distribution is exactly zipfian.
 */
import { Rng } from '../common/rng.js';

export const distributions = ['uniform', 'zipfian'] as const;
export type Distribution = (typeof distributions)[number];

/** YCSB's default zipfian constant. */
export const zipfSkewDefault = 0.99;
/** The Gray et al. method needs 0 < theta < 1 (theta = 1 divides by zero). */
export const zipfSkewMin = 0.01;
export const zipfSkewMax = 0.9999;
/**
 * Terms of zeta(n, theta) summed one by one; beyond that the tail is the Euler-Maclaurin
 * approximation, whose error (~ m^(-theta-3)) is far below a double's precision. Keeps the
 * precomputation in milliseconds even for a billion keys.
 */
export const zetaExactTermsMax = 1_000_000;
/** The permutation works on 32-bit integers. */
export const keySpaceMax = 2 ** 32;
/** Feistel rounds of the scatter permutation: 4 rounds make a good pseudo-random permutation. */
const feistelRounds = 4;

/** Chooses key indexes in [0, keys). */
export interface KeyChooser {
  readonly keys: number;
  next(): number;
}

/**
 * zeta(n, theta) = sum over i = 1..n of 1 / i^theta: the normalising constant of the zipfian
 * distribution. Exact for n <= zetaExactTermsMax, else exact head plus an Euler-Maclaurin tail.
 */
export function zeta(n: number, theta: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`zeta: n must be a non-negative integer, got ${n}`);
  const exactTerms = Math.min(n, zetaExactTermsMax);
  let sum = 0;
  for (let i = 1; i <= exactTerms; i++) sum += 1 / Math.pow(i, theta);
  if (n === exactTerms) return sum;
  // Sum over i = a..b of f(i) ~ integral(a..b) f + (f(a) + f(b)) / 2 + (f'(b) - f'(a)) / 12.
  const a = exactTerms + 1;
  const b = n;
  const f = (x: number): number => Math.pow(x, -theta);
  const fPrime = (x: number): number => -theta * Math.pow(x, -theta - 1);
  const integral = (Math.pow(b, 1 - theta) - Math.pow(a, 1 - theta)) / (1 - theta);
  return sum + integral + (f(a) + f(b)) / 2 + (fPrime(b) - fPrime(a)) / 12;
}

/** Checks a zipfian constant; throws a RangeError naming the allowed range. */
export function checkZipfSkew(theta: number): number {
  if (!Number.isFinite(theta) || theta < zipfSkewMin || theta > zipfSkewMax) {
    throw new RangeError(`zipfian skew must be from ${zipfSkewMin} to ${zipfSkewMax}, got ${theta}`);
  }
  return theta;
}

function checkKeys(keys: number): number {
  if (!Number.isInteger(keys) || keys < 1 || keys > keySpaceMax) {
    throw new RangeError(`key space must be an integer from 1 to ${keySpaceMax}, got ${keys}`);
  }
  return keys;
}

/**
 * Zipfian popularity ranks in [0, n): rank 0 is the most popular. P(rank k) is proportional to
 * 1 / (k + 1)^theta.
 */
export class ZipfianRanks {
  private readonly alpha: number;
  private readonly eta: number;
  private readonly zetan: number;
  private readonly twoRanksBound: number;

  /**
   * @param n number of ranks (keys)
   * @param theta skew, 0 < theta < 1 (0.99 in YCSB)
   * @param zetan zeta(n, theta) if already computed (it costs O(min(n, 10^6))), e.g. once for all
   *   worker threads
   */
  constructor(
    readonly n: number,
    readonly theta: number,
    zetan?: number,
  ) {
    checkKeys(n);
    checkZipfSkew(theta);
    this.zetan = zetan ?? zeta(n, theta);
    const zeta2 = 1 + Math.pow(0.5, theta);
    this.alpha = 1 / (1 - theta);
    this.twoRanksBound = zeta2;
    this.eta = n <= 2 ? 0 : (1 - Math.pow(2 / n, 1 - theta)) / (1 - zeta2 / this.zetan);
  }

  /** The next rank, from a uniform double `u` in [0, 1). */
  rankOf(u: number): number {
    const uz = u * this.zetan;
    if (uz < 1) return 0;
    if (uz < this.twoRanksBound || this.n <= 2) return Math.min(1, this.n - 1);
    const rank = Math.floor(this.n * Math.pow(this.eta * u - this.eta + 1, this.alpha));
    return Math.min(Math.max(rank, 0), this.n - 1);
  }
}

/** murmur3's 32-bit finaliser: the Feistel round function. */
function mix32(x: number): number {
  let h = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A seeded pseudo-random permutation of [0, n) in O(1) memory: a balanced Feistel network over
 * the smallest even number of bits covering n, with cycle walking to stay below n (fewer than 4
 * rounds of walking on average, since 2^bits < 4n).
 */
export class KeyPermutation {
  private readonly halfBits: number;
  private readonly halfMask: number;
  private readonly roundKeys: number[];

  constructor(
    readonly n: number,
    seed: number,
  ) {
    checkKeys(n);
    let bits = Math.max(2, Math.ceil(Math.log2(n)));
    if (bits % 2 === 1) bits += 1;
    this.halfBits = bits / 2;
    this.halfMask = this.halfBits === 16 ? 0xffff : (1 << this.halfBits) - 1;
    const rng = new Rng(seed);
    this.roundKeys = Array.from({ length: feistelRounds }, () => rng.nextUint32());
  }

  /** The image of `x` (0 <= x < n); distinct inputs give distinct outputs. */
  map(x: number): number {
    let value = x;
    do value = this.encrypt(value);
    while (value >= this.n);
    return value;
  }

  private encrypt(x: number): number {
    let left = Math.floor(x / (this.halfMask + 1));
    let right = x & this.halfMask;
    for (const key of this.roundKeys) {
      const next = (left ^ mix32(right ^ key)) & this.halfMask;
      left = right;
      right = next;
    }
    return left * (this.halfMask + 1) + right;
  }
}

/** Every key equally likely. */
export class UniformKeyChooser implements KeyChooser {
  constructor(
    readonly keys: number,
    private readonly rng: Rng,
  ) {
    checkKeys(keys);
  }

  next(): number {
    return this.rng.nextInt(this.keys);
  }
}

/** Zipfian over the keys, hot keys scattered by a permutation seeded with `scatterSeed`. */
export class ZipfianKeyChooser implements KeyChooser {
  private readonly ranks: ZipfianRanks;
  private readonly permutation: KeyPermutation;

  /**
   * @param scatterSeed seeds the rank-to-key permutation; give every worker the same one so they
   *   agree on which keys are hot
   */
  constructor(
    readonly keys: number,
    theta: number,
    private readonly rng: Rng,
    scatterSeed: number,
    zetan?: number,
  ) {
    this.ranks = new ZipfianRanks(keys, theta, zetan);
    this.permutation = new KeyPermutation(keys, scatterSeed);
  }

  /** The key index of popularity rank `rank` (0 = hottest). */
  keyOfRank(rank: number): number {
    return this.permutation.map(rank);
  }

  next(): number {
    return this.permutation.map(this.ranks.rankOf(this.rng.nextDouble()));
  }
}

export interface KeyChooserOptions {
  distribution: Distribution;
  keys: number;
  zipfSkew: number;
  /** Seeds this chooser's draws (per worker). */
  seed: number;
  /** Seeds the zipfian scatter permutation (the same for every worker of a run). */
  scatterSeed: number;
  /** Precomputed zeta(keys, zipfSkew), if any. */
  zetan?: number;
}

export function createKeyChooser(options: KeyChooserOptions): KeyChooser {
  const rng = new Rng(options.seed);
  return options.distribution === 'zipfian'
    ? new ZipfianKeyChooser(options.keys, options.zipfSkew, rng, options.scatterSeed, options.zetan)
    : new UniformKeyChooser(options.keys, rng);
}

/** Digits of the largest key index, so that keys sort in index order. */
export function keyWidth(keys: number): number {
  return String(Math.max(0, keys - 1)).length;
}

/** The key of index `index`: `<prefix><index zero-padded to width>`, e.g. `bench:000042`. */
export function keyName(prefix: string, index: number, width: number): string {
  return `${prefix}${String(index).padStart(width, '0')}`;
}
