/**
 * Disk writes of the block device that holds a path (the servers' data), from Linux's
 * /proc/diskstats (Documentation/admin-guide/iostats.rst): write I/Os completed, sectors written
 * and, on kernels from 5.5, flush requests completed. The counters are the whole device's: every
 * process writing to it counts. Elsewhere (no /proc/diskstats, a path on tmpfs, overlayfs or
 * btrfs whose device number names no block device) the figures are simply unavailable.
 */
import { readFileSync, statSync } from 'node:fs';

/** /proc/diskstats counts sectors of 512 bytes, whatever the device's own sector size. */
export const diskStatsSectorBytes = 512;
/** Fields of a /proc/diskstats line since Linux 2.6.25 (more since 4.18 and 5.5). */
const diskStatsFieldsMin = 14;
/** 1-based field numbers of a /proc/diskstats line. */
const fieldWritesCompleted = 8;
const fieldSectorsWritten = 10;
const fieldFlushesCompleted = 19;
const microsPerSecond = 1_000_000;

/** A block device's numbers (`major:minor`, as in /proc/diskstats and /sys/dev/block). */
export interface DeviceNumber {
  major: number;
  minor: number;
}

/** The counters of one /proc/diskstats line that matter for writes. */
export interface DiskStatsLine extends DeviceNumber {
  /** Kernel name: `vda`, `sda1`, `nvme0n1p2`, `dm-0`. */
  name: string;
  writesCompleted: number;
  sectorsWritten: number;
  /** Flush requests completed; null on kernels before 5.5 (fewer than 20 fields). */
  flushesCompleted: number | null;
}

/** The counters of one device at one moment. */
export type DiskSnapshot = DiskStatsLine;

/** Disk writes over the measured phase (the JSON report's `disk`). */
export interface DiskWrites {
  /** What was measured. */
  method: string;
  /** The path whose device was measured (the servers' data dir). */
  path: string;
  /** Kernel name of the device (or partition) holding it. */
  device: string;
  major: number;
  minor: number;
  /** Write I/Os completed (after merging in the block layer). */
  writes: number;
  bytesWritten: number;
  /** Flush requests completed (fdatasync on a device with a write cache); null when the kernel does not count them. */
  flushes: number | null;
  /** Wall time the figures cover (the same interval as the CPU figures). */
  wallMicros: number;
  writesPerSecond: number;
  bytesPerSecond: number;
  /** Per measured operation (successes and errors); 0 when no operation. */
  writesPerOp: number;
  bytesPerOp: number;
  flushesPerOp: number | null;
}

export const diskWritesMethod =
  '/proc/diskstats writes completed, sectors written (512 B) and flushes completed of the block device holding the data dir, before and after the measured phase; the whole device, so other processes\' writes count too';

/**
 * The major and minor number of a device number as `stat` gives it (st_dev; glibc's encoding:
 * major in bits 8-19 and 32-51, minor in bits 0-7 and 20-43). A number as Node's fs.Stats.dev or
 * a bigint as with `{ bigint: true }`.
 */
export function decodeDeviceNumber(dev: number | bigint): DeviceNumber {
  const value = BigInt(dev);
  if (value < 0n) throw new RangeError(`not a device number: ${String(dev)}`);
  const major = Number(((value >> 8n) & 0xfffn) | ((value >> 32n) & 0xfffff000n));
  const minor = Number((value & 0xffn) | ((value >> 12n) & 0xffffff00n));
  return { major, minor };
}

/**
 * The counters of every well-formed line of /proc/diskstats text (malformed or short lines are
 * skipped, never an error).
 */
export function parseDiskStats(text: string): DiskStatsLine[] {
  const lines: DiskStatsLine[] = [];
  for (const raw of text.split('\n')) {
    const fields = raw.trim().split(/\s+/);
    if (fields.length < diskStatsFieldsMin) continue;
    const number = (field: number): number => Number(fields[field - 1]);
    const major = number(1);
    const minor = number(2);
    const writesCompleted = number(fieldWritesCompleted);
    const sectorsWritten = number(fieldSectorsWritten);
    if (![major, minor, writesCompleted, sectorsWritten].every((value) => Number.isSafeInteger(value) && value >= 0)) continue;
    const flushes = fields.length >= fieldFlushesCompleted ? number(fieldFlushesCompleted) : Number.NaN;
    lines.push({
      major,
      minor,
      name: fields[2]!,
      writesCompleted,
      sectorsWritten,
      flushesCompleted: Number.isSafeInteger(flushes) && flushes >= 0 ? flushes : null,
    });
  }
  return lines;
}

/**
 * The line of device `device` in /proc/diskstats text; undefined if there is none. A file
 * system on a partition has the partition's number, so this is the partition's line.
 */
export function findDiskStats(text: string, device: DeviceNumber): DiskStatsLine | undefined {
  return parseDiskStats(text).find((line) => line.major === device.major && line.minor === device.minor);
}

/**
 * The block device holding `path`; undefined if it cannot be stat'ed or its file system has no
 * block device of its own (major 0: tmpfs, overlayfs, btrfs subvolumes, NFS...).
 */
export function deviceOfPath(path: string): DeviceNumber | undefined {
  try {
    const device = decodeDeviceNumber(statSync(path, { bigint: true }).dev);
    return device.major === 0 ? undefined : device;
  } catch {
    return undefined;
  }
}

function readProcDiskStats(): string | undefined {
  try {
    return readFileSync('/proc/diskstats', 'utf8');
  } catch {
    return undefined;
  }
}

/** The counters of `device` now; undefined if unavailable (no /proc/diskstats, no such line). */
export function snapshotDisk(device: DeviceNumber | undefined, read: () => string | undefined = readProcDiskStats): DiskSnapshot | undefined {
  if (device === undefined) return undefined;
  const text = read();
  return text === undefined ? undefined : findDiskStats(text, device);
}

/**
 * Disk writes between two snapshots of the same device, per second of `wallMicros` and per
 * operation of `ops`; null if either snapshot is missing, they are of different devices, or a
 * counter went backwards (wrapped on a 32-bit kernel, or the device was replaced).
 */
export function diskWritesBetween(
  path: string,
  before: DiskSnapshot | undefined,
  after: DiskSnapshot | undefined,
  ops: number,
  wallMicros: number,
): DiskWrites | null {
  if (before === undefined || after === undefined) return null;
  if (before.major !== after.major || before.minor !== after.minor) return null;
  const writes = after.writesCompleted - before.writesCompleted;
  const bytesWritten = (after.sectorsWritten - before.sectorsWritten) * diskStatsSectorBytes;
  const flushes = before.flushesCompleted === null || after.flushesCompleted === null ? null : after.flushesCompleted - before.flushesCompleted;
  if (writes < 0 || bytesWritten < 0 || (flushes !== null && flushes < 0)) return null;
  const perOp = (value: number): number => (ops > 0 ? value / ops : 0);
  const perSecond = (value: number): number => (wallMicros > 0 ? (value * microsPerSecond) / wallMicros : 0);
  return {
    method: diskWritesMethod,
    path,
    device: after.name,
    major: after.major,
    minor: after.minor,
    writes,
    bytesWritten,
    flushes,
    wallMicros,
    writesPerSecond: perSecond(writes),
    bytesPerSecond: perSecond(bytesWritten),
    writesPerOp: perOp(writes),
    bytesPerOp: perOp(bytesWritten),
    flushesPerOp: flushes === null ? null : perOp(flushes),
  };
}

/** Bytes with binary units and 3 significant-ish digits: "512 B", "16.0 KiB", "51.2 MiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  return `${value.toFixed(1)} ${units[unit]}`;
}
