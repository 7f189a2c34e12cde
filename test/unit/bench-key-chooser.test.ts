import { describe, expect, it } from 'vitest';
import {
  createKeyChooser,
  KeyPermutation,
  keyName,
  keyWidth,
  UniformKeyChooser,
  zeta,
  zetaExactTermsMax,
  ZipfianKeyChooser,
  ZipfianRanks,
} from '../../src/bench/key-chooser.js';
import { deriveSeed, Rng } from '../../src/common/rng.js';
import { OpChooser, opMixOf } from '../../src/bench/workload.js';

function bruteZeta(n: number, theta: number): number {
  let sum = 0;
  for (let i = 1; i <= n; i++) sum += 1 / Math.pow(i, theta);
  return sum;
}

describe('zeta', () => {
  it('is the exact sum for small n', () => {
    expect(zeta(1, 0.99)).toBe(1);
    expect(zeta(2, 0.5)).toBeCloseTo(1 + 1 / Math.SQRT2, 12);
    expect(zeta(1000, 0.99)).toBeCloseTo(bruteZeta(1000, 0.99), 9);
  });

  it('approximates the tail beyond the exact terms to ~1e-12 relative error', () => {
    const n = zetaExactTermsMax * 3;
    for (const theta of [0.5, 0.99]) {
      const exact = bruteZeta(n, theta);
      expect(Math.abs(zeta(n, theta) - exact) / exact).toBeLessThan(1e-12);
    }
  });
});

describe('ZipfianKeyChooser', () => {
  const keys = 100_000;
  const draws = 200_000;
  const topShare = (chooser: ZipfianKeyChooser | UniformKeyChooser, hot: Set<number>): number => {
    let hits = 0;
    for (let i = 0; i < draws; i++) if (hot.has(chooser.next())) hits += 1;
    return hits / draws;
  };

  it('gives the top 1% of keys a large share of the draws (skew 0.99)', () => {
    const zipf = new ZipfianKeyChooser(keys, 0.99, new Rng(1), 42);
    const hot = new Set(Array.from({ length: keys / 100 }, (_, rank) => zipf.keyOfRank(rank)));
    // Expected share: zeta(1000) / zeta(100000) ~ 0.60.
    const expected = zeta(keys / 100, 0.99) / zeta(keys, 0.99);
    const share = topShare(zipf, hot);
    expect(share).toBeGreaterThan(0.5);
    expect(Math.abs(share - expected)).toBeLessThan(0.02);
    // The same keys get ~1% of uniform draws.
    expect(topShare(new UniformKeyChooser(keys, new Rng(1)), hot)).toBeLessThan(0.02);
  });

  it('draws rank 0 with probability 1/zeta(n) and rank 1 2^-theta times as often', () => {
    const theta = 0.99;
    const ranks = new ZipfianRanks(keys, theta);
    const rng = new Rng(7);
    const counts = [0, 0];
    for (let i = 0; i < draws; i++) {
      const rank = ranks.rankOf(rng.nextDouble());
      if (rank < 2) counts[rank]! += 1;
    }
    const p0 = 1 / zeta(keys, theta);
    expect(counts[0]! / draws).toBeGreaterThan(p0 * 0.93);
    expect(counts[0]! / draws).toBeLessThan(p0 * 1.07);
    expect(counts[0]! / counts[1]!).toBeGreaterThan(Math.pow(2, theta) * 0.9);
    expect(counts[0]! / counts[1]!).toBeLessThan(Math.pow(2, theta) * 1.1);
  });

  it('scatters the hot keys over the key space instead of the lowest indexes', () => {
    const zipf = new ZipfianKeyChooser(keys, 0.99, new Rng(1), 123);
    const hottest = Array.from({ length: 100 }, (_, rank) => zipf.keyOfRank(rank));
    const deciles = new Set(hottest.map((key) => Math.floor((key / keys) * 10)));
    expect(deciles.size).toBeGreaterThanOrEqual(8);
    expect(hottest.filter((key) => key < 100).length).toBeLessThan(5);
  });

  it('only answers indexes in [0, keys), for tiny and odd key spaces too', () => {
    for (const n of [1, 2, 3, 7, 1000, 65_537, 123_457]) {
      for (const chooser of [new ZipfianKeyChooser(n, 0.99, new Rng(n), 5), new ZipfianKeyChooser(n, 0.5, new Rng(n), 5), new UniformKeyChooser(n, new Rng(n))]) {
        for (let i = 0; i < 5_000; i++) {
          const key = chooser.next();
          expect(Number.isInteger(key) && key >= 0 && key < n).toBe(true);
        }
      }
    }
  });

  it('is deterministic for a seed and differs between seeds', () => {
    const sequence = (seed: number): number[] => {
      const chooser = createKeyChooser({ distribution: 'zipfian', keys: 10_000, zipfSkew: 0.99, seed, scatterSeed: 9 });
      return Array.from({ length: 1000 }, () => chooser.next());
    };
    expect(sequence(1)).toEqual(sequence(1));
    expect(sequence(1)).not.toEqual(sequence(2));
  });

  it('rejects a skew outside (0, 1) and an empty key space', () => {
    expect(() => new ZipfianRanks(10, 1)).toThrow(RangeError);
    expect(() => new ZipfianRanks(10, 0)).toThrow(RangeError);
    expect(() => new ZipfianRanks(0, 0.99)).toThrow(RangeError);
  });
});

describe('KeyPermutation', () => {
  it('is a bijection of [0, n)', () => {
    for (const n of [1, 2, 5, 1000, 65_536, 70_001]) {
      const permutation = new KeyPermutation(n, 77);
      const seen = new Set<number>();
      for (let x = 0; x < n; x++) {
        const y = permutation.map(x);
        expect(y >= 0 && y < n).toBe(true);
        seen.add(y);
      }
      expect(seen.size).toBe(n);
    }
  });

  it('depends on the seed', () => {
    const a = new KeyPermutation(1000, 1);
    const b = new KeyPermutation(1000, 2);
    const same = Array.from({ length: 1000 }, (_, x) => a.map(x) === b.map(x)).filter(Boolean).length;
    expect(same).toBeLessThan(20);
  });
});

describe('keys, seeds and operation mixes', () => {
  it('names keys zero-padded so they sort by index', () => {
    expect(keyWidth(100_000)).toBe(5);
    expect(keyWidth(1)).toBe(1);
    expect(keyName('bench:', 42, 5)).toBe('bench:00042');
  });

  it('derives distinct seeds per stream', () => {
    const seeds = new Set(Array.from({ length: 64 }, (_, i) => deriveSeed(12345, i)));
    expect(seeds.size).toBe(64);
  });

  it('draws operations in the proportions of the mix', () => {
    const chooser = new OpChooser(opMixOf('mixed', 0.6, 0.1));
    const rng = new Rng(3);
    const counts = { get: 0, put: 0, delete: 0 };
    const n = 100_000;
    for (let i = 0; i < n; i++) counts[chooser.next(rng)] += 1;
    expect(counts.get / n).toBeCloseTo(0.6, 1);
    expect(counts.put / n).toBeCloseTo(0.3, 1);
    expect(counts.delete / n).toBeCloseTo(0.1, 1);
    expect(opMixOf('ycsb-b')).toEqual({ get: 0.95, put: 0.05, delete: 0 });
    expect(() => opMixOf('mixed', 0.8, 0.3)).toThrow(RangeError);
  });
});
