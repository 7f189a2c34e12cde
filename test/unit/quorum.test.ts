import { describe, expect, it } from 'vitest';
import { type ConsistencyLevel, canStillReach, requiredAcks } from '../../src/cluster/quorum.js';

describe('requiredAcks', () => {
  it.each([
    ['one', 1, 1], ['quorum', 1, 1], ['all', 1, 1],
    ['one', 2, 1], ['quorum', 2, 2], ['all', 2, 2],
    ['one', 3, 1], ['quorum', 3, 2], ['all', 3, 3],
    ['one', 4, 1], ['quorum', 4, 3], ['all', 4, 4],
    ['one', 5, 1], ['quorum', 5, 3], ['all', 5, 5],
  ] as const)('%s with rf %d needs %d', (level, rf, expected) => {
    expect(requiredAcks(level, rf)).toBe(expected);
  });

  it('makes any two quorums overlap', () => {
    for (let rf = 1; rf <= 9; rf++) expect(2 * requiredAcks('quorum', rf)).toBeGreaterThan(rf);
  });

  it('rejects a replication factor below 1 or not an integer', () => {
    expect(() => requiredAcks('one', 0)).toThrow(RangeError);
    expect(() => requiredAcks('quorum', -1)).toThrow(RangeError);
    expect(() => requiredAcks('all', 2.5)).toThrow(RangeError);
    expect(() => requiredAcks('all', Number.NaN)).toThrow(RangeError);
  });

  it('rejects an unknown level', () => {
    expect(() => requiredAcks('two' as ConsistencyLevel, 3)).toThrow(RangeError);
  });
});

describe('canStillReach', () => {
  it('is true while enough replicas are outstanding', () => {
    expect(canStillReach(2, 0, 0, 3)).toBe(true);
    expect(canStillReach(2, 0, 1, 3)).toBe(true);
    expect(canStillReach(2, 1, 1, 3)).toBe(true);
    expect(canStillReach(2, 2, 1, 3)).toBe(true);
    expect(canStillReach(3, 2, 0, 3)).toBe(true);
    expect(canStillReach(1, 0, 2, 3)).toBe(true);
  });

  it('is false once too many replicas failed', () => {
    expect(canStillReach(2, 0, 2, 3)).toBe(false);
    expect(canStillReach(3, 2, 1, 3)).toBe(false);
    expect(canStillReach(1, 0, 3, 3)).toBe(false);
  });

  it('rejects inconsistent counts', () => {
    expect(() => canStillReach(2, 2, 2, 3)).toThrow(RangeError);
    expect(() => canStillReach(2, -1, 0, 3)).toThrow(RangeError);
  });
});
