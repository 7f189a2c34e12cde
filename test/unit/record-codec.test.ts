import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type Version, type VersionedRecord, compareVersions, versionCounterMax, versionWallMsMax } from '../../src/cluster/version.js';
import {
  RecordDecodeError,
  compareEncodedVersions,
  decodeRecord,
  decodeRecordHeader,
  encodeRecord,
  isTombstoneRecord,
  recordHeader,
  recordHeaderBytes,
  recordHeaderBytesFixed,
  recordValue,
  recordWallMs,
} from '../../src/storage/record-codec.js';

const version = (wallMs: number, counter: number, nodeId: string): Version => ({ wallMs, counter, nodeId });

function roundTrip(record: VersionedRecord): VersionedRecord {
  const decoded = decodeRecord(encodeRecord(record));
  expect(decoded.version).toEqual(record.version);
  expect(decoded.tombstone).toBe(record.tombstone);
  expect(Buffer.from(decoded.value).equals(Buffer.from(record.value))).toBe(true);
  return decoded;
}

describe('record codec', () => {
  it('round-trips a value', () => {
    const record = { version: version(1_700_000_000_000, 3, 'node-1'), tombstone: false, value: Buffer.from('hello') };
    roundTrip(record);
    const encoded = encodeRecord(record);
    expect(encoded.length).toBe(recordHeaderBytesFixed + 'node-1'.length + 5);
    expect(recordValue(encoded).toString()).toBe('hello');
    expect(isTombstoneRecord(encoded)).toBe(false);
  });

  it('round-trips a tombstone', () => {
    const record = { version: version(5, 0, 'n'), tombstone: true, value: new Uint8Array(0) };
    roundTrip(record);
    expect(isTombstoneRecord(encodeRecord(record))).toBe(true);
    expect(decodeRecordHeader(encodeRecord(record))).toEqual({ version: record.version, tombstone: true });
  });

  it('round-trips an empty value that is not a tombstone', () => {
    const decoded = roundTrip({ version: version(5, 0, 'n'), tombstone: false, value: new Uint8Array(0) });
    expect(decoded.tombstone).toBe(false);
    expect(decoded.value.length).toBe(0);
  });

  it('round-trips a 1 MiB value', () => {
    const value = Uint8Array.from({ length: 1024 * 1024 }, (_, i) => (i * 31) & 0xff);
    roundTrip({ version: version(1, 1, 'node-1'), tombstone: false, value });
  });

  it('round-trips the extremes: max 48-bit wall, max counter, 255-byte node id', () => {
    roundTrip({ version: version(versionWallMsMax, versionCounterMax, 'x'.repeat(255)), tombstone: false, value: Buffer.from([0, 255]) });
    roundTrip({ version: version(0, 0, 'a'), tombstone: false, value: Buffer.from([1]) });
  });

  it('decodes from a plain Uint8Array at an offset into a larger buffer', () => {
    const encoded = encodeRecord({ version: version(9, 9, 'n9'), tombstone: false, value: Buffer.from('abc') });
    const backing = new Uint8Array(encoded.length + 7);
    backing.set(encoded, 3);
    const view = backing.subarray(3, 3 + encoded.length);
    const decoded = decodeRecord(view);
    expect(decoded.version).toEqual(version(9, 9, 'n9'));
    expect(Buffer.from(decoded.value).toString()).toBe('abc');
  });

  it('reads the header, its length and the wall clock without decoding', () => {
    const encoded = encodeRecord({ version: version(versionWallMsMax, 7, 'node-1'), tombstone: false, value: Buffer.from('abc') });
    expect(recordHeaderBytes(encoded)).toBe(recordHeaderBytesFixed + 'node-1'.length);
    expect(recordHeader(encoded).equals(encoded.subarray(0, encoded.length - 3))).toBe(true);
    expect(recordWallMs(encoded)).toBe(versionWallMsMax);
    // A header reads like its record.
    expect(recordWallMs(recordHeader(encoded))).toBe(versionWallMsMax);
    expect(decodeRecordHeader(recordHeader(encoded)).version).toEqual(version(versionWallMsMax, 7, 'node-1'));
  });

  it('refuses to encode a node id that is not ASCII', () => {
    for (const nodeId of ['n\u00e9', '\u0161', 'node-\u{1f600}', '\ud800']) {
      expect(() => encodeRecord({ version: version(1, 0, nodeId), tombstone: false, value: new Uint8Array(0) })).toThrow(/not ASCII/);
    }
  });

  it('refuses to encode an empty or over-long node id', () => {
    expect(() => encodeRecord({ version: version(1, 0, ''), tombstone: false, value: new Uint8Array(0) })).toThrow();
    expect(() => encodeRecord({ version: version(1, 0, 'x'.repeat(256)), tombstone: false, value: new Uint8Array(0) })).toThrow();
  });

  it('compareEncodedVersions agrees with compareVersions on random versions', () => {
    const arbVersion = fc.record({
      // Small pools so that equal walls, counters and ids (the tie-breaks) come up often.
      wallMs: fc.oneof(fc.constantFrom(0, 1, 1000, versionWallMsMax), fc.integer({ min: 0, max: versionWallMsMax })),
      counter: fc.oneof(fc.constantFrom(0, 1, 255, 256, versionCounterMax), fc.integer({ min: 0, max: versionCounterMax })),
      nodeId: fc.constantFrom('a', 'b', 'ab', 'node-1', 'node-10', 'node-2', 'Node-1'),
    });
    fc.assert(
      fc.property(arbVersion, arbVersion, (a, b) => {
        const ea = encodeRecord({ version: a, tombstone: false, value: Buffer.from('x') });
        const eb = encodeRecord({ version: b, tombstone: true, value: new Uint8Array(0) });
        expect(Math.sign(compareEncodedVersions(ea, eb))).toBe(Math.sign(compareVersions(a, b)));
        expect(Math.sign(compareEncodedVersions(eb, ea))).toBe(Math.sign(compareVersions(b, a)));
      }),
      { numRuns: 500 },
    );
  });

  it('throws RecordDecodeError on garbage', () => {
    const good = encodeRecord({ version: version(1, 2, 'node-1'), tombstone: false, value: Buffer.from('v') });
    const bad: Uint8Array[] = [
      new Uint8Array(0),
      Buffer.from('x'),
      good.subarray(0, recordHeaderBytesFixed), // no node id
      good.subarray(0, recordHeaderBytesFixed + 3), // node id cut short
      Buffer.concat([Buffer.from([0x20]), good.subarray(1)]), // unknown codec version
      Buffer.from('{"json":"is not a record"}'),
    ];
    const zeroIdLength = Buffer.from(good);
    zeroIdLength[9] = 0;
    bad.push(zeroIdLength);
    for (const buf of bad) {
      expect(() => decodeRecord(buf)).toThrow(RecordDecodeError);
      expect(() => decodeRecordHeader(buf)).toThrow(RecordDecodeError);
      expect(() => isTombstoneRecord(buf)).toThrow(RecordDecodeError);
      expect(() => recordValue(buf)).toThrow(RecordDecodeError);
      expect(() => recordHeader(buf)).toThrow(RecordDecodeError);
      expect(() => recordHeaderBytes(buf)).toThrow(RecordDecodeError);
      expect(() => recordWallMs(buf)).toThrow(RecordDecodeError);
      expect(() => compareEncodedVersions(buf, good)).toThrow(RecordDecodeError);
      expect(() => compareEncodedVersions(good, buf)).toThrow(RecordDecodeError);
    }
  });
});
