/**
 * A small, fast, seeded pseudo-random generator (load generator, simulator) (sfc32, seeded through
 * splitmix32). Not for cryptography: it only has to be quick, well mixed and reproducible, so
 * that a benchmark's key sequence can be replayed from the seed it prints.
 */

/** 2^32, to turn a uint32 into a float in [0, 1). */
const uint32Range = 4_294_967_296;
/** 2^21: the high bits of a 53-bit double are 21 bits of the second draw. */
const high21Range = 2_097_152;
/** Outputs discarded after seeding so that nearby seeds diverge at once. */
const warmupDraws = 12;

/** splitmix32: a seed scrambler; each call advances `state` and answers a well-mixed uint32. */
export function splitmix32(state: { value: number }): number {
  state.value = (state.value + 0x9e3779b9) | 0;
  let z = state.value;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Mixes a seed and a stream number (e.g. a worker index) into an independent seed. */
export function deriveSeed(seed: number, stream: number): number {
  const state = { value: (seed ^ Math.imul(stream + 1, 0x27d4eb2d)) | 0 };
  splitmix32(state);
  return splitmix32(state);
}

/** A seeded generator (sfc32). The same seed always gives the same sequence. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const state = { value: seed | 0 };
    this.a = splitmix32(state) | 0;
    this.b = splitmix32(state) | 0;
    this.c = splitmix32(state) | 0;
    this.d = 1;
    for (let i = 0; i < warmupDraws; i++) this.nextUint32();
  }

  /** A uniform uint32. */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A uniform float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / uint32Range;
  }

  /** A uniform double in [0, 1) with 53 bits of resolution (for large key spaces). */
  nextDouble(): number {
    const high = this.nextUint32() >>> 11;
    const low = this.nextUint32();
    return (high * uint32Range + low) / (high21Range * uint32Range);
  }

  /** A uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.floor(this.nextDouble() * n);
  }
}
