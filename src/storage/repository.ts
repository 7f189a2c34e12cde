import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Database, type RootDatabase, open } from 'lmdb';
import type { ClockReading } from '../cluster/hlc.js';
import { DataDirLock } from './data-dir-lock.js';
import { HintLog, type ReservedEntries, noRemovals } from './hint-log.js';
import { scanBounds } from './key-range.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import { compareEncodedVersions, isTombstoneRecord, recordHeaderBytesFixed } from './record-codec.js';

/** File name of the LMDB environment inside dataDir (and inside a backup directory). */
export const environmentFileName = 'kvstore.mdb';
/** On-disk layout version; a data dir from a newer layout is refused rather than misread. */
export const schemaVersion = 1;
/** Most records one scan page returns, whatever the caller asks. */
export const scanPageRecordsMax = 10_000;
/**
 * Most records a write transaction may hold to be committed synchronously on the main thread;
 * larger ones go to lmdb-js's write thread so the event loop keeps serving during the fsync.
 */
export const syncCommitRecordsMax = 4;

const metaNodeId = 'nodeId';
const metaSchemaVersion = 'schemaVersion';
const metaClock = 'hlc';
const metaClusterContact = 'clusterContact';
const metaQuarantined = 'quarantined';

/** The data dir belongs to another node id, or has a layout this build cannot read. */
export class DataDirMismatchError extends Error {
  override name = 'DataDirMismatchError';
}

export interface StoredRecord {
  readonly key: Buffer;
  /** Encoded record (see record-codec.ts). */
  readonly record: Buffer;
}

/**
 * Told of every change to a stored record, inside the transaction that makes it: the key, its
 * hash, and the version headers before and after (undefined for absent). Anti-entropy keeps its
 * hash trees current with this.
 */
export type RecordObserver = (key: Buffer, keyHash: number, oldHeader: Buffer | undefined, newHeader: Buffer | undefined) => void;

/** The version header (flags, clock, node id) of an encoded record, without the value. */
export function recordHeader(record: Buffer): Buffer {
  return record.subarray(0, recordHeaderBytesFixed + record[9]!);
}

/** Value of every hash-index entry written now: the index lists keys only. */
const emptyIndexValue = Buffer.alloc(0);

/** Seed of the key hash shared by the ring and the hash index (both use murmur3 seed 0). */
const keyHashSeed = 0;

export interface WriteOutcome {
  /** The record stored before this write on this node, if any and if applied locally. */
  readonly previous: Buffer | undefined;
}

/** Work for the next shared write transaction: `run` executes inside it. */
interface WriteJob {
  run(): unknown;
  /** Records it writes (for choosing the commit path). */
  readonly records: number;
  /** The clock reading to persist with it (coordinated writes). */
  readonly clock: ClockReading | undefined;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

export interface RepositoryOptions {
  readonly dataDir: string;
  readonly nodeId: string;
  /** Ids of the other members: each gets a replication-log queue. */
  readonly peers: readonly string[];
}

/**
 * The node's LMDB environment: `records` (key -> encoded record), `hints` (the replication log)
 * and `meta` (node id, schema version, clock high-water mark). Knows nothing of gRPC or of the
 * cluster; the replication layer decides what to write where.
 *
 * Durability: every write method resolves only after its transaction is committed and flushed
 * to disk (lmdb-js commits on a worker thread with overlapping sync, and we wait for `flushed`;
 * or, for a small transaction, synchronously with the fdatasync inline: see runTransaction).
 */
export class Repository {
  readonly hints: HintLog;
  private observer: RecordObserver | undefined;
  private readonly counts = { records: 0, live: 0 };
  /** Work waiting for the next shared write transaction (see runTransaction). */
  private writeJobs: WriteJob[] = [];
  private transactionRunning = false;
  private transactionScheduled = false;

  private constructor(
    private readonly env: RootDatabase,
    private readonly records: Database<Buffer, Buffer>,
    private readonly meta: Database<Buffer, string>,
    hintsDb: Database<Buffer, Buffer>,
    /**
     * (murmur3(key) u32 BE | key) -> empty: every stored key in key-hash order, for anti-entropy.
     * Values are ignored (layout 1 data dirs written before this change hold version headers).
     */
    private readonly hashIndex: Database<Buffer, Buffer>,
    private readonly lock: DataDirLock | undefined,
    readonly dataDir: string,
    peers: readonly string[],
  ) {
    this.hints = new HintLog(hintsDb, peers);
    // Counted once here, then kept current by every store and purge: Status asks often, and a
    // scan per Status was O(records).
    for (const { value } of records.getRange({})) {
      this.counts.records++;
      if (!isTombstoneRecord(value)) this.counts.live++;
    }
  }

  /**
   * Opens (creating if needed) the environment in `dataDir`. Refuses a directory held by another
   * live process, or written by another node id.
   */
  static open(options: RepositoryOptions): Repository {
    mkdirSync(options.dataDir, { recursive: true });
    const lock = DataDirLock.acquire(options.dataDir);
    try {
      const env = open({ path: join(options.dataDir, environmentFileName), maxDbs: 8 });
      const meta = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
      const records = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
      const hints = env.openDB<Buffer, Buffer>({ name: 'hints', encoding: 'binary', keyEncoding: 'binary' });
      const hashIndex = env.openDB<Buffer, Buffer>({ name: 'hashindex', encoding: 'binary', keyEncoding: 'binary' });
      Repository.claimIdentity(meta, options);
      Repository.checkHashIndex(records, hashIndex);
      return new Repository(env, records, meta, hints, hashIndex, lock, options.dataDir, options.peers);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** Opens a backup (or any environment file) read-only, for inspection and tests. */
  static openReadOnly(dir: string): { records: Database<Buffer, Buffer>; nodeId: string | undefined; close(): Promise<void> } {
    const env = open({ path: join(dir, environmentFileName), readOnly: true, maxDbs: 8 });
    const meta = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
    const records = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
    return { records, nodeId: meta.get(metaNodeId)?.toString('utf8'), close: () => env.close() };
  }

  /** Rebuilds the hash index if it does not cover the records (e.g. after a restore of an old copy). */
  private static checkHashIndex(records: Database<Buffer, Buffer>, hashIndex: Database<Buffer, Buffer>): void {
    const entries = (db: Database<Buffer, Buffer>) => (db.getStats() as { entryCount: number }).entryCount;
    if (entries(records) === entries(hashIndex)) return;
    hashIndex.transactionSync(() => {
      hashIndex.clearSync();
      for (const { key } of records.getRange({})) hashIndex.putSync(hashIndexKey(key, murmur3x86_32(key, keyHashSeed)), emptyIndexValue);
    });
  }

  private static claimIdentity(meta: Database<Buffer, string>, options: RepositoryOptions): void {
    const stored = meta.get(metaNodeId)?.toString('utf8');
    if (stored !== undefined && stored !== options.nodeId) {
      throw new DataDirMismatchError(
        `data directory ${options.dataDir} belongs to node "${stored}", not "${options.nodeId}": ` +
          `point dataDir at this node's own directory (or an empty one)`,
      );
    }
    const version = meta.get(metaSchemaVersion)?.readUInt32BE(0);
    if (version !== undefined && version > schemaVersion) {
      throw new DataDirMismatchError(`data directory ${options.dataDir} has layout version ${version}; this build reads up to ${schemaVersion}`);
    }
    if (stored === undefined) {
      meta.transactionSync(() => {
        meta.putSync(metaNodeId, Buffer.from(options.nodeId, 'utf8'));
        const v = Buffer.alloc(4);
        v.writeUInt32BE(schemaVersion);
        meta.putSync(metaSchemaVersion, v);
      });
    }
  }

  /**
   * Sets the observer of record changes and replays every stored record to it (as new). Replays
   * from the records themselves, not the hash index, so a digest always describes what is stored.
   */
  observeRecords(observer: RecordObserver): void {
    this.observer = observer;
    for (const { key, value } of this.records.getRange({})) {
      observer(key, murmur3x86_32(key, keyHashSeed), undefined, recordHeader(value));
    }
  }

  /** Every record whose key hash lies in (startExclusive, endInclusive], wrapping past 2^32 - 1. */
  recordsInHashInterval(startExclusive: number, endInclusive: number): StoredRecord[] {
    const out: StoredRecord[] = [];
    const scan = (fromInclusive: number, toInclusive: number) => {
      const start = Buffer.alloc(4);
      start.writeUInt32BE(fromInclusive);
      const end = toInclusive < 0xffffffff ? Buffer.alloc(4) : undefined;
      end?.writeUInt32BE(toInclusive + 1);
      for (const { key } of this.hashIndex.getRange({ start, end })) {
        const userKey = key.subarray(4);
        const record = this.records.get(userKey);
        if (record !== undefined) out.push({ key: Buffer.from(userKey), record });
      }
    };
    if (startExclusive === endInclusive) return out;
    if (startExclusive < endInclusive) scan(startExclusive + 1, endInclusive);
    else {
      if (startExclusive < 0xffffffff) scan(startExclusive + 1, 0xffffffff);
      scan(0, endInclusive);
    }
    return out;
  }

  /** Stores `record` for `key` over `previous` inside a write transaction, keeping the index and observer current. */
  private storeInTransaction(key: Buffer, record: Buffer, previous: Buffer | undefined): void {
    this.records.putSync(key, record);
    if (previous === undefined) this.counts.records++;
    this.counts.live += (isTombstoneRecord(record) ? 0 : 1) - (previous === undefined || isTombstoneRecord(previous) ? 0 : 1);
    const keyHash = murmur3x86_32(key, keyHashSeed);
    // The index lists keys, not versions: only a new key adds an entry. Overwrites (most writes)
    // then cost one B-tree insert instead of two, which halves the pages a commit writes.
    if (previous === undefined) this.hashIndex.putSync(hashIndexKey(key, keyHash), emptyIndexValue);
    this.observer?.(key, keyHash, previous === undefined ? undefined : recordHeader(previous), recordHeader(record));
  }

  /** When this node last had contact with any peer (persisted), or undefined if never recorded. */
  clusterContactMs(): number | undefined {
    return this.meta.get(metaClusterContact)?.readUIntBE(0, 6);
  }

  /** Persists the last cluster contact time (not fsynced on its own: it rides the next commit). */
  setClusterContactMs(ms: number): void {
    const buf = Buffer.allocUnsafe(6);
    buf.writeUIntBE(ms, 0, 6);
    void this.meta.put(metaClusterContact, buf);
  }

  /** The reason this data dir was quarantined (see StaleNodeGuard), if it was. */
  quarantineReason(): string | undefined {
    return this.meta.get(metaQuarantined)?.toString('utf8');
  }

  /** Forgets a quarantine and the contact history (operator override after a whole-cluster outage). */
  async clearQuarantine(): Promise<void> {
    await this.meta.remove(metaQuarantined);
    await this.meta.remove(metaClusterContact);
    await this.env.flushed;
  }

  async setQuarantined(reason: string): Promise<void> {
    await this.meta.put(metaQuarantined, Buffer.from(reason, 'utf8'));
    await this.env.flushed;
  }

  /**
   * Tombstone GC: deletes up to `scanMax` records' worth of tombstones whose version wall time is
   * before `cutoffMs`, scanning in key order after `cursor`. Returns the cursor to continue from
   * (undefined when the scan wrapped) and how many were purged.
   */
  async purgeTombstones(cutoffMs: number, cursor: Buffer | undefined, scanMax: number): Promise<{ cursor: Buffer | undefined; purged: number }> {
    const victims: Buffer[] = [];
    let last: Buffer | undefined;
    let scanned = 0;
    for (const { key, value } of this.records.getRange({ start: cursor === undefined ? undefined : keyAfterCursor(cursor), limit: scanMax })) {
      scanned++;
      last = key;
      if (isTombstoneRecord(value) && value.readUIntBE(1, 6) < cutoffMs) victims.push(key);
    }
    let purged = 0;
    if (victims.length > 0) {
      let drained = noRemovals;
      purged = await this.env.transaction(() => {
        let n = 0;
        for (const key of victims) {
          const stored = this.records.get(key);
          // Re-check inside the transaction: a newer write may have replaced the tombstone.
          if (stored === undefined || !isTombstoneRecord(stored) || stored.readUIntBE(1, 6) >= cutoffMs) continue;
          const keyHash = murmur3x86_32(key, keyHashSeed);
          this.records.removeSync(key);
          this.counts.records--; // a tombstone: the live count is unchanged
          this.hashIndex.removeSync(hashIndexKey(key, keyHash));
          this.observer?.(key, keyHash, recordHeader(stored), undefined);
          n++;
        }
        drained = this.hints.drainRemovalsInTransaction();
        return n;
      }).catch((err: unknown) => {
        this.hints.requeueRemovals(drained);
        throw err;
      });
      await this.env.flushed;
    }
    return { cursor: scanned < scanMax ? undefined : last, purged };
  }

  /** The persisted clock high-water mark, to seed the HLC on start. */
  clockReading(): ClockReading | undefined {
    const buf = this.meta.get(metaClock);
    if (buf === undefined) return undefined;
    return { wallMs: buf.readUIntBE(0, 6), counter: buf.readUInt16BE(6) };
  }

  /** The version header of the record stored for `key` (a copy of the header only), or undefined. */
  getRecordHeader(key: Uint8Array): Buffer | undefined {
    // lmdb-js's no-copy read: the buffer is reused by the next read, so copy the header out now.
    const stored = this.records.getBinaryFast(key as Buffer);
    return stored === undefined ? undefined : Buffer.from(recordHeader(stored));
  }

  /** The encoded record stored for `key` (a copy), or undefined. */
  getRecord(key: Uint8Array): Buffer | undefined {
    return this.records.get(key as Buffer);
  }

  /**
   * Commits a write coordinated by this node: the record (last-writer-wins against the stored
   * one) when this node is a replica, the replication-log entries `reserved` for it (see
   * HintLog.reserve; discarded here if the transaction fails), and the clock high-water mark, all
   * in one transaction. Resolves after the flush, with the record this node stored before. Shares
   * its transaction with the other writes queued meanwhile (see runTransaction).
   */
  async commitWrite(key: Buffer, record: Buffer, applyLocally: boolean, reserved: ReservedEntries | undefined, clock: ClockReading): Promise<WriteOutcome> {
    try {
      return await this.enqueue((): WriteOutcome => {
        let previous: Buffer | undefined;
        if (applyLocally) {
          previous = this.records.get(key);
          if (previous === undefined || compareEncodedVersions(record, previous) > 0) this.storeInTransaction(key, record, previous);
        }
        if (reserved !== undefined) this.hints.writeReservedInTransaction(reserved);
        return { previous };
      }, 1, clock);
    } catch (err) {
      if (reserved !== undefined) this.hints.discardReserved(reserved);
      throw err;
    }
  }

  /**
   * Merges records received from a peer (replication, read repair, anti-entropy): each is stored
   * only if its version is newer than the stored one. Returns, for each index in `wantPrevious`,
   * the record stored before. Resolves after the commit is flushed. Shares its transaction with
   * the other writes queued meanwhile (see runTransaction).
   */
  applyRecords(batch: readonly StoredRecord[], wantPrevious: readonly number[] = []): Promise<(Buffer | undefined)[]> {
    return this.enqueue(() => {
      const before: (Buffer | undefined)[] = new Array(wantPrevious.length);
      const wanted = new Map<number, number>();
      wantPrevious.forEach((index, i) => wanted.set(index, i));
      batch.forEach(({ key, record }, index) => {
        const stored = this.records.get(key);
        const slot = wanted.get(index);
        if (slot !== undefined) before[slot] = stored;
        if (stored === undefined || compareEncodedVersions(record, stored) > 0) this.storeInTransaction(key, record, stored);
      });
      return before;
    }, batch.length);
  }

  /** Queues `run` for the next shared write transaction; resolves with its result once flushed. */
  private enqueue<T>(run: () => T, records: number, clock?: ClockReading): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.writeJobs.push({ run, records, clock, resolve: resolve as (value: unknown) => void, reject });
      this.scheduleTransaction();
    });
  }

  private scheduleTransaction(): void {
    if (this.transactionRunning || this.transactionScheduled || this.writeJobs.length === 0) return;
    this.transactionScheduled = true;
    setImmediate(() => {
      this.transactionScheduled = false;
      void this.runTransaction();
    });
  }

  /**
   * Group commit: runs every queued write job (coordinated writes and the batches received from
   * every peer) in one LMDB transaction, with at most one of ours committing at a time; what
   * arrives meanwhile waits for the next. The profile showed the cost of a batch round (a
   * transaction callback, its hand-off to lmdb-js's write thread, its commit and fsync, per
   * source) dominating at 128 clients, so a node's own batch and its peers' share one.
   */
  private async runTransaction(): Promise<void> {
    const jobs = this.writeJobs;
    this.writeJobs = [];
    this.transactionRunning = true;
    let results: unknown[];
    let drained = noRemovals;
    const body = () => {
      const out = jobs.map((job) => job.run());
      let clock: ClockReading | undefined;
      for (const job of jobs) if (job.clock !== undefined && (clock === undefined || laterReading(job.clock, clock))) clock = job.clock;
      if (clock !== undefined) this.meta.putSync(metaClock, encodeClock(clock));
      drained = this.hints.drainRemovalsInTransaction();
      return out;
    };
    try {
      // A transaction of a few records (light load) commits on this thread: handing it to lmdb-js's
      // write thread and back cost ~95-170 µs of latency and ~115-165 µs of CPU per commit
      // (BENCHMARKS.md, Session 4), which pays off only when there is other work to overlap with the commit.
      // Both paths fdatasync once per commit (checked with strace).
      let records = 0;
      for (const job of jobs) records += job.records;
      results = records <= syncCommitRecordsMax ? this.env.transactionSync(body) : await this.env.transaction(body);
    } catch (err) {
      this.hints.requeueRemovals(drained);
      this.transactionRunning = false;
      this.scheduleTransaction();
      for (const job of jobs) job.reject(err);
      return;
    }
    this.transactionRunning = false;
    this.scheduleTransaction();
    try {
      await this.env.flushed;
    } catch (err) {
      for (const job of jobs) job.reject(err);
      return;
    }
    jobs.forEach((job, i) => job.resolve(results[i]));
  }

  /**
   * One page of records in key order: keys starting with `prefix` and strictly after
   * `startAfter`, tombstones included.
   */
  scan(prefix: Uint8Array, startAfter: Uint8Array, limit: number): StoredRecord[] {
    const { start, end } = scanBounds(prefix, startAfter);
    const out: StoredRecord[] = [];
    const pageLimit = Math.min(Math.max(1, limit), scanPageRecordsMax);
    for (const { key, value } of this.records.getRange({ start, end, limit: pageLimit })) out.push({ key, record: value });
    return out;
  }

  /** Record counts: all records, and live (non-tombstone) ones. */
  recordCounts(): { records: number; live: number } {
    return { ...this.counts };
  }

  /**
   * Hot, consistent copy of the environment (LMDB's copy, compacted) into `targetDir`, which must
   * not exist yet. The node keeps serving while it runs.
   */
  async backup(targetDir: string): Promise<{ bytes: number }> {
    mkdirSync(dirname(targetDir), { recursive: true });
    mkdirSync(targetDir, { recursive: false });
    await this.env.backup(join(targetDir, environmentFileName), true);
    let bytes = 0;
    for (const name of readdirSync(targetDir)) bytes += statSync(join(targetDir, name)).size;
    return { bytes };
  }

  async close(): Promise<void> {
    try {
      await this.hints.flushRemovals();
      await this.env.close();
    } finally {
      this.lock?.release();
    }
  }
}

function laterReading(a: ClockReading, b: ClockReading): boolean {
  return a.wallMs > b.wallMs || (a.wallMs === b.wallMs && a.counter > b.counter);
}

function encodeClock(clock: ClockReading): Buffer {
  const buf = Buffer.allocUnsafe(8);
  buf.writeUIntBE(clock.wallMs, 0, 6);
  buf.writeUInt16BE(clock.counter, 6);
  return buf;
}

function hashIndexKey(key: Uint8Array, keyHash: number): Buffer {
  const out = Buffer.allocUnsafe(4 + key.length);
  out.writeUInt32BE(keyHash, 0);
  out.set(key, 4);
  return out;
}

function keyAfterCursor(cursor: Buffer): Buffer {
  const out = Buffer.alloc(cursor.length + 1);
  cursor.copy(out);
  return out;
}
