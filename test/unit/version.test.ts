import { describe, expect, it } from 'vitest';
import { type Version, type VersionedRecord, compareVersions, formatVersion, mergeRecords } from '../../src/cluster/version.js';

const v = (wallMs: number, counter: number, nodeId: string): Version => ({ wallMs, counter, nodeId });

describe('compareVersions', () => {
  it('orders by wall clock first', () => {
    expect(compareVersions(v(1, 9, 'z'), v(2, 0, 'a'))).toBeLessThan(0);
    expect(compareVersions(v(2, 0, 'a'), v(1, 9, 'z'))).toBeGreaterThan(0);
  });

  it('then by counter', () => {
    expect(compareVersions(v(5, 1, 'z'), v(5, 2, 'a'))).toBeLessThan(0);
    expect(compareVersions(v(5, 2, 'a'), v(5, 1, 'z'))).toBeGreaterThan(0);
  });

  it('then by node id, bytewise', () => {
    expect(compareVersions(v(5, 1, 'a'), v(5, 1, 'b'))).toBeLessThan(0);
    expect(compareVersions(v(5, 1, 'b'), v(5, 1, 'a'))).toBeGreaterThan(0);
    // A prefix sorts first; upper case (0x41..) before lower case (0x61..).
    expect(compareVersions(v(5, 1, 'node'), v(5, 1, 'node-2'))).toBeLessThan(0);
    expect(compareVersions(v(5, 1, 'Node'), v(5, 1, 'node'))).toBeLessThan(0);
  });

  it('is 0 only for equal versions', () => {
    expect(compareVersions(v(5, 1, 'a'), v(5, 1, 'a'))).toBe(0);
  });

  it('sorts a list into a total order', () => {
    const sorted = [v(1, 0, 'b'), v(0, 5, 'a'), v(1, 0, 'a'), v(1, 1, 'a'), v(0, 5, 'b')].sort(compareVersions);
    expect(sorted.map(formatVersion)).toEqual(['0.5@a', '0.5@b', '1.0@a', '1.0@b', '1.1@a']);
  });
});

describe('formatVersion', () => {
  it('formats as wallMs.counter@nodeId', () => {
    expect(formatVersion(v(1_700_000_000_123, 42, 'node-1'))).toBe('1700000000123.42@node-1');
  });
});

describe('mergeRecords', () => {
  const rec = (version: Version, tombstone = false): VersionedRecord => ({ version, tombstone, value: new Uint8Array(tombstone ? 0 : 1) });

  it('keeps the newer record, tombstones included', () => {
    const older = rec(v(1, 0, 'a'));
    const newer = rec(v(2, 0, 'a'), true);
    expect(mergeRecords(older, newer)).toBe(newer);
    expect(mergeRecords(newer, older)).toBe(newer);
  });

  it('breaks a version collision like storage does, whichever comes first: tombstone, then value bytes', () => {
    const value = rec(v(1, 0, 'a'));
    const tombstone = rec(v(1, 0, 'a'), true);
    expect(mergeRecords(value, tombstone)).toBe(tombstone);
    expect(mergeRecords(tombstone, value)).toBe(tombstone);
    const small = { version: v(1, 0, 'a'), tombstone: false, value: Uint8Array.from([1]) };
    const large = { version: v(1, 0, 'a'), tombstone: false, value: Uint8Array.from([1, 0]) };
    expect(mergeRecords(small, large)).toBe(large);
    expect(mergeRecords(large, small)).toBe(large);
  });

  it('treats undefined as absent', () => {
    const r = rec(v(1, 0, 'a'));
    expect(mergeRecords(undefined, r)).toBe(r);
    expect(mergeRecords(r, undefined)).toBe(r);
    expect(mergeRecords(undefined, undefined)).toBeUndefined();
  });
});
