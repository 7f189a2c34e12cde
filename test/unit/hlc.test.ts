import { describe, expect, it } from 'vitest';
import { HybridLogicalClock, clockDriftMsMax } from '../../src/cluster/hlc.js';
import { type Version, compareVersions, versionCounterMax } from '../../src/cluster/version.js';

/** A wall clock the test moves by hand. */
function handClock(startMs: number): { now: () => number; set: (ms: number) => void } {
  let ms = startMs;
  return { now: () => ms, set: (next) => (ms = next) };
}

function expectIncreasing(versions: Version[]): void {
  for (let i = 1; i < versions.length; i++) expect(compareVersions(versions[i - 1]!, versions[i]!)).toBeLessThan(0);
}

describe('HybridLogicalClock', () => {
  it('follows the wall clock and stamps its node id', () => {
    const wall = handClock(1000);
    const clock = new HybridLogicalClock('n1', wall.now);
    expect(clock.now()).toEqual({ wallMs: 1000, counter: 0, nodeId: 'n1' });
    wall.set(1005);
    expect(clock.now()).toEqual({ wallMs: 1005, counter: 0, nodeId: 'n1' });
  });

  it('is strictly monotonic within one millisecond', () => {
    const wall = handClock(1000);
    const clock = new HybridLogicalClock('n1', wall.now);
    const versions = Array.from({ length: 100 }, () => clock.now());
    expectIncreasing(versions);
    expect(versions.at(-1)).toEqual({ wallMs: 1000, counter: 99, nodeId: 'n1' });
  });

  it('never goes backwards when the wall clock does', () => {
    const wall = handClock(5000);
    const clock = new HybridLogicalClock('n1', wall.now);
    const versions = [clock.now()];
    wall.set(4000);
    versions.push(clock.now(), clock.now());
    expect(versions[1]).toEqual({ wallMs: 5000, counter: 1, nodeId: 'n1' });
    wall.set(5001);
    versions.push(clock.now());
    expect(versions.at(-1)).toEqual({ wallMs: 5001, counter: 0, nodeId: 'n1' });
    expectIncreasing(versions);
  });

  it('borrows the next millisecond when the counter overflows', () => {
    const wall = handClock(1000);
    const clock = new HybridLogicalClock('n1', wall.now);
    let last = clock.now();
    for (let i = 0; i < versionCounterMax; i++) last = clock.now();
    expect(last).toEqual({ wallMs: 1000, counter: versionCounterMax, nodeId: 'n1' });
    const borrowed = clock.now();
    expect(borrowed).toEqual({ wallMs: 1001, counter: 0, nodeId: 'n1' });
    // The wall clock catching up to the borrowed millisecond does not repeat it.
    wall.set(1001);
    expect(compareVersions(clock.now(), borrowed)).toBeGreaterThan(0);
  });

  it('observe() advances past a newer version from a peer', () => {
    const wall = handClock(1000);
    const clock = new HybridLogicalClock('n1', wall.now);
    clock.now();
    const remote: Version = { wallMs: 1500, counter: 7, nodeId: 'n2' };
    expect(clock.observe(remote)).toBe(true);
    expect(clock.reading()).toEqual({ wallMs: 1500, counter: 7 });
    const next = clock.now();
    expect(next).toEqual({ wallMs: 1500, counter: 8, nodeId: 'n1' });
    expect(compareVersions(next, remote)).toBeGreaterThan(0);
  });

  it('observe() of an older version changes nothing', () => {
    const wall = handClock(2000);
    const clock = new HybridLogicalClock('n1', wall.now);
    clock.now();
    expect(clock.observe({ wallMs: 1000, counter: 50, nodeId: 'n2' })).toBe(true);
    expect(clock.reading()).toEqual({ wallMs: 2000, counter: 0 });
  });

  it('observe() rejects and counts a version beyond the drift bound', () => {
    const wall = handClock(10_000);
    const clock = new HybridLogicalClock('n1', wall.now, undefined, 1000);
    clock.now();
    expect(clock.observe({ wallMs: 11_000, counter: 0, nodeId: 'n2' })).toBe(true); // exactly at the bound
    expect(clock.observe({ wallMs: 11_001, counter: 0, nodeId: 'n2' })).toBe(false);
    expect(clock.observe({ wallMs: 99_999, counter: 0, nodeId: 'n3' })).toBe(false);
    expect(clock.rejectedDriftCount).toBe(2);
    expect(clock.reading()).toEqual({ wallMs: 11_000, counter: 0 });
  });

  it('uses a 60 s drift bound by default', () => {
    expect(clockDriftMsMax).toBe(60_000);
    const wall = handClock(0);
    const clock = new HybridLogicalClock('n1', wall.now);
    expect(clock.observe({ wallMs: clockDriftMsMax + 1, counter: 0, nodeId: 'n2' })).toBe(false);
    expect(clock.rejectedDriftCount).toBe(1);
  });

  it('seeded from reading() on restart, never goes backwards even if the wall clock did', () => {
    const wall = handClock(50_000);
    const before = new HybridLogicalClock('n1', wall.now);
    before.now();
    before.observe({ wallMs: 50_020, counter: 3, nodeId: 'n2' });
    const last = before.now();
    const persisted = before.reading();

    wall.set(40_000); // restarted on a machine whose clock is behind
    const after = new HybridLogicalClock('n1', wall.now, persisted);
    const first = after.now();
    expect(compareVersions(first, last)).toBeGreaterThan(0);
    expect(first).toEqual({ wallMs: 50_020, counter: 5, nodeId: 'n1' });
  });
});
