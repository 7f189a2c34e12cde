import { describe, expect, it } from 'vitest';
import { testClockOffsetMs, testStorageFaults } from '../../src/common/test-hooks.js';

/** The KVSTORE_TEST_* hooks a node reads at start (docs/testing.md): unset, nothing; malformed, refused. */

describe('KVSTORE_TEST_CLOCK_OFFSET_MS', () => {
  it('is 0 unset, an integer when set, and refused out of range', () => {
    expect(testClockOffsetMs({})).toBe(0);
    expect(testClockOffsetMs({ KVSTORE_TEST_CLOCK_OFFSET_MS: '-40000' })).toBe(-40_000);
    expect(() => testClockOffsetMs({ KVSTORE_TEST_CLOCK_OFFSET_MS: '1.5' })).toThrow(/KVSTORE_TEST_CLOCK_OFFSET_MS must be an integer/);
  });
});

describe('KVSTORE_TEST_STORAGE_FAULTS', () => {
  it('is undefined unset or empty', () => {
    expect(testStorageFaults({})).toBeUndefined();
    expect(testStorageFaults({ KVSTORE_TEST_STORAGE_FAULTS: '' })).toBeUndefined();
  });

  it('fails jobs and commits at about the rates asked, the same draws for the same seed', () => {
    const draws = (seed: number) => {
      const faults = testStorageFaults({ KVSTORE_TEST_STORAGE_FAULTS: `job=0.1,commit=0.3,seed=${seed}` })!;
      expect(faults).toMatchObject({ jobRate: 0.1, commitRate: 0.3, seed });
      return Array.from({ length: 10_000 }, (_, i) => (i % 2 === 0 ? faults.failJob() : faults.failCommit()));
    };
    const first = draws(7);
    expect(draws(7)).toEqual(first);
    const jobs = first.filter((failed, i) => i % 2 === 0 && failed).length / 5_000;
    const commits = first.filter((failed, i) => i % 2 === 1 && failed).length / 5_000;
    expect(jobs).toBeGreaterThan(0.07);
    expect(jobs).toBeLessThan(0.13);
    expect(commits).toBeGreaterThan(0.26);
    expect(commits).toBeLessThan(0.34);
  });

  it('leaves a rate it was not given at 0, and picks a seed when none is given', () => {
    const faults = testStorageFaults({ KVSTORE_TEST_STORAGE_FAULTS: 'commit=0.5' })!;
    expect(faults.jobRate).toBe(0);
    expect(Number.isInteger(faults.seed)).toBe(true);
    expect(Array.from({ length: 100 }, () => faults.failJob()).some(Boolean)).toBe(false);
  });

  it('refuses what it cannot read, naming the variable and the part', () => {
    for (const [raw, why] of [
      ['commit=0.6', /commit=0.6 is out of range/],
      ['job=-0.1', /job=-0.1 is out of range/],
      ['disk=0.1', /"disk=0.1" is not job=, commit= or seed=/],
      ['job=0.1,job=0.2', /job given twice/],
      ['job=0.1,seed=1.5', /seed=1.5 is out of range/],
      ['seed=3', /neither job nor commit fails/],
      ['job', /"job" is not job=/],
      ['job=', /job= is out of range/],
    ] as const) {
      expect(() => testStorageFaults({ KVSTORE_TEST_STORAGE_FAULTS: raw }), raw).toThrow(/^KVSTORE_TEST_STORAGE_FAULTS must look like/);
      expect(() => testStorageFaults({ KVSTORE_TEST_STORAGE_FAULTS: raw }), raw).toThrow(why);
    }
  });
});
