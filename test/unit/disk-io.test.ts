import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  decodeDeviceNumber,
  deviceOfPath,
  diskStatsSectorBytes,
  diskWritesBetween,
  findDiskStats,
  formatBytes,
  parseDiskStats,
  snapshotDisk,
} from '../../src/bench/disk-io.js';

/**
 * /proc/diskstats of a machine with a SATA disk (two partitions), an NVMe disk (one partition)
 * under LVM, a loop device and, last, a line of an old kernel (14 fields, no discard/flush counters).
 * Fields: major minor name, reads completed, merged, sectors, ms; writes completed (8), merged,
 * sectors (10), ms; in flight, io ms, weighted ms; discards (15-18); flushes (19), flush ms.
 */
const diskstats = [
  '   7       0 loop0 46 0 2110 11 0 0 0 0 0 32 11 0 0 0 0 0 0',
  '   8       0 sda 91233 10027 6532456 40213 524288 77021 9876544 301223 0 412000 341436 0 0 0 0 1200 400',
  '   8       1 sda1 1021 0 48210 300 12 0 96 5 0 120 305 0 0 0 0 0 0',
  '   8       2 sda2 90100 10027 6482002 39900 524270 77021 9876448 301210 0 411800 341110 0 0 0 0 0 0',
  ' 259       0 nvme0n1 5000 12 400000 900 777777 3000 12345678 88888 2 99999 90000 10 0 80 3 4242 17',
  ' 259       1 nvme0n1p1 4990 12 399000 899 777770 3000 12345600 88880 2 99990 89990 10 0 80 3 0 0',
  ' 253       0 dm-0 4980 0 398000 950 780001 0 12345600 95000 2 99990 96000 0 0 0 0 0 0',
  '   3      64 hdb 100 0 800 10 4321 0 34560 50 0 60 60',
].join('\n');

describe('decodeDeviceNumber', () => {
  it('splits st_dev into major and minor (glibc encoding)', () => {
    // 254:0 (/dev/vda) and 8:2 (/dev/sda2), 259:1 (nvme0n1p1).
    expect(decodeDeviceNumber(0xfe00)).toEqual({ major: 254, minor: 0 });
    expect(decodeDeviceNumber(0x0802)).toEqual({ major: 8, minor: 2 });
    expect(decodeDeviceNumber((259 << 8) | 1)).toEqual({ major: 259, minor: 1 });
    // Minor numbers above 255 live in bits 20 and up: 8:300 = (300 & 0xff) | ((300 & ~0xff) << 12).
    expect(decodeDeviceNumber((8 << 8) | (300 & 0xff) | ((300 & ~0xff) << 12))).toEqual({ major: 8, minor: 300 });
    // Majors above 4095 live in bits 32 and up (only as a bigint or a number past 2^32).
    const big = (0x1000n << 32n) | (0x005n << 8n) | 0x07n;
    expect(decodeDeviceNumber(big)).toEqual({ major: 0x1005, minor: 7 });
    expect(decodeDeviceNumber(Number(big))).toEqual({ major: 0x1005, minor: 7 });
    expect(() => decodeDeviceNumber(-1)).toThrow(RangeError);
  });
});

describe('parseDiskStats', () => {
  it('reads writes completed (field 8), sectors written (field 10) and flushes (field 19) of every line', () => {
    const lines = parseDiskStats(diskstats);
    expect(lines.map((line) => line.name)).toEqual(['loop0', 'sda', 'sda1', 'sda2', 'nvme0n1', 'nvme0n1p1', 'dm-0', 'hdb']);
    expect(lines[1]).toEqual({ major: 8, minor: 0, name: 'sda', writesCompleted: 524288, sectorsWritten: 9876544, flushesCompleted: 1200 });
    expect(lines[4]).toEqual({ major: 259, minor: 0, name: 'nvme0n1', writesCompleted: 777777, sectorsWritten: 12345678, flushesCompleted: 4242 });
    expect(lines[7]).toEqual({ major: 3, minor: 64, name: 'hdb', writesCompleted: 4321, sectorsWritten: 34560, flushesCompleted: null });
  });

  it('takes a 14-field line (kernel before 4.18) without a flush count, and skips shorter ones', () => {
    expect(parseDiskStats('   8      16 sdb 1 2 3 4 55 6 770 8 0 10 11')).toEqual([
      { major: 8, minor: 16, name: 'sdb', writesCompleted: 55, sectorsWritten: 770, flushesCompleted: null },
    ]);
    expect(parseDiskStats('   8      16 sdb 1 2 3 4 55 6 770 8 0 10')).toEqual([]);
    // The 2.6-era partition format (7 fields: reads, sectors read, writes, sectors written).
    expect(parseDiskStats('   8    1 sda1 100 800 55 770')).toEqual([]);
  });

  it('skips blank, short and malformed lines instead of failing', () => {
    const text = ['', 'garbage', '8 0 sda x y z', '8 1 sda1 1 2 3 4 five 6 7 8 9 10 11', '8 2 sda2 1 2 3 4 5 6 7 8 9 10 11', '   '].join('\n');
    expect(parseDiskStats(text).map((line) => line.name)).toEqual(['sda2']);
    expect(parseDiskStats('')).toEqual([]);
  });
});

describe('findDiskStats', () => {
  it('answers the line of the device itself: the partition when the file system is on one', () => {
    expect(findDiskStats(diskstats, { major: 8, minor: 2 })).toMatchObject({ name: 'sda2', writesCompleted: 524270, sectorsWritten: 9876448 });
    expect(findDiskStats(diskstats, { major: 8, minor: 0 })?.name).toBe('sda');
    expect(findDiskStats(diskstats, { major: 253, minor: 0 })?.name).toBe('dm-0');
    expect(findDiskStats(diskstats, { major: 259, minor: 1 })?.name).toBe('nvme0n1p1');
  });

  it('answers undefined when no line matches', () => {
    expect(findDiskStats(diskstats, { major: 8, minor: 3 })).toBeUndefined();
    expect(findDiskStats(diskstats, { major: 64, minor: 3 })).toBeUndefined();
    expect(findDiskStats('', { major: 8, minor: 0 })).toBeUndefined();
  });
});

describe('snapshotDisk and deviceOfPath', () => {
  it('is unavailable without a device, without /proc/diskstats, or without the device in it', () => {
    let reads = 0;
    const read = (): string => {
      reads++;
      return diskstats;
    };
    expect(snapshotDisk(undefined, read)).toBeUndefined();
    expect(reads).toBe(0);
    expect(snapshotDisk({ major: 8, minor: 2 }, () => undefined)).toBeUndefined();
    expect(snapshotDisk({ major: 9, minor: 9 }, read)).toBeUndefined();
    expect(snapshotDisk({ major: 8, minor: 2 }, read)?.name).toBe('sda2');
  });

  it('answers undefined for a path that does not exist', () => {
    const dir = mkdtempSync(join(tmpdir(), 'disk-io-test-'));
    try {
      expect(deviceOfPath(join(dir, 'missing'))).toBeUndefined();
      const device = deviceOfPath(dir);
      // Where the temp dir is on a real block device, its number has a nonzero major.
      if (device !== undefined) expect(device.major).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('diskWritesBetween', () => {
  const at = (writesCompleted: number, sectorsWritten: number, flushesCompleted: number | null, minor = 2) => ({
    major: 8,
    minor,
    name: minor === 2 ? 'sda2' : 'sda1',
    writesCompleted,
    sectorsWritten,
    flushesCompleted,
  });

  it('computes the deltas, per second and per operation', () => {
    const disk = diskWritesBetween('/data', at(1000, 50_000, 300), at(13_345, 150_000, 2_800), 3_250, 2_500_000);
    expect(disk).toMatchObject({ path: '/data', device: 'sda2', major: 8, minor: 2, writes: 12_345, flushes: 2_500, wallMicros: 2_500_000 });
    expect(disk!.bytesWritten).toBe(100_000 * diskStatsSectorBytes);
    expect(disk!.bytesWritten).toBe(51_200_000);
    expect(disk!.writesPerOp).toBeCloseTo(3.798, 3);
    expect(disk!.bytesPerOp).toBeCloseTo(15_753.85, 2);
    expect(disk!.flushesPerOp).toBeCloseTo(0.769, 3);
    expect(disk!.writesPerSecond).toBeCloseTo(4_938, 6);
    expect(disk!.bytesPerSecond).toBeCloseTo(20_480_000, 6);
  });

  it('answers 0 per op and per second for an empty interval', () => {
    const disk = diskWritesBetween('/data', at(5, 5, null), at(5, 5, null), 0, 0);
    expect(disk).toMatchObject({ writes: 0, bytesWritten: 0, writesPerOp: 0, bytesPerOp: 0, writesPerSecond: 0, flushes: null, flushesPerOp: null });
  });

  it('has no flush figure when either snapshot lacks it', () => {
    const disk = diskWritesBetween('/data', at(1, 8, null), at(3, 24, 9), 2, 1e6);
    expect(disk!.flushes).toBeNull();
    expect(disk!.writesPerOp).toBe(1);
  });

  it('is unavailable (null) without both snapshots, across devices, or when a counter went backwards', () => {
    expect(diskWritesBetween('/data', undefined, at(1, 1, 1), 1, 1)).toBeNull();
    expect(diskWritesBetween('/data', at(1, 1, 1), undefined, 1, 1)).toBeNull();
    expect(diskWritesBetween('/data', at(1, 1, 1, 1), at(2, 2, 2, 2), 1, 1)).toBeNull();
    expect(diskWritesBetween('/data', at(10, 1, 1), at(2, 2, 2), 1, 1)).toBeNull();
    expect(diskWritesBetween('/data', at(1, 10, 1), at(2, 2, 2), 1, 1)).toBeNull();
    expect(diskWritesBetween('/data', at(1, 1, 10), at(2, 2, 2), 1, 1)).toBeNull();
  });
});

describe('formatBytes', () => {
  it('uses binary units with one decimal', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(16 * 1024)).toBe('16.0 KiB');
    expect(formatBytes(51.2 * 1024 * 1024)).toBe('51.2 MiB');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.0 GiB');
  });
});
