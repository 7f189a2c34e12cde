import { type Clock, nextTurn, systemClock } from '../platform/clock.js';
import { mkdirSync, readdirSync, statfsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Database, type RootDatabase, open } from 'lmdb';
import type { ClockReading } from '../cluster/hlc.js';
import { DataDirLock } from './data-dir-lock.js';
import { HintLog, type ReservedEntries, noRemovals } from './hint-log.js';
import { scanBounds } from './key-range.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import { isTombstoneRecord, RecordDecodeError, recordHeader, recordWallMs } from './record-codec.js';
import { compareRecords, isVersionCollision } from './merge-rule.js';

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
const metaRestoredFrom = 'restoredFromBackupAt';
const metaMembership = 'membership';
const metaMembershipAcceptor = 'membership/acceptor';
/** Prefix of the receivers' stream cursors in meta (docs/membership.md §1.1, §5.3): `transfer/<name>`. */
const metaTransferPrefix = 'transfer/';

/** The data dir belongs to another node id, or has a layout this build cannot read. */
export class DataDirMismatchError extends Error {
  override name = 'DataDirMismatchError';
}

/** A record that cannot be stored (empty or too long a key, a malformed record): refused before any transaction. */
export class UnstorableRecordError extends Error {
  override name = 'UnstorableRecordError';
}

/** The filesystem holding the data dir is full: nothing of the failed write was applied. */
export class DiskFullError extends Error {
  override name = 'DiskFullError';
}

/** Longest key LMDB stores under the hash index's 4-byte prefix (lmdb-js's 1978-byte key limit). */
export const storableKeyBytesMax = 1974;
/**
 * Below this much free space on the data dir's filesystem, a failed commit is reported as a full
 * disk: LMDB needs room for new pages (copy-on-write) even to overwrite.
 */
const diskFullFreeBytesMax = 16 * 1024 * 1024;

/** Two different records with the same version: impossible by design, so counted and logged if seen. */
export interface VersionCollision {
  readonly key: Buffer;
  readonly stored: Buffer;
  readonly received: Buffer;
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
export { recordHeader };

/** Value of every hash-index entry written now: the index lists keys only. */
const emptyIndexValue = Buffer.alloc(0);

/** Seed of the key hash shared by the ring and the hash index (both use murmur3 seed 0). */
const keyHashSeed = 0;

/** What applyRecords did: per wanted index the record stored before, and the records refused. */
export type ApplyOutcome = (Buffer | undefined)[] & { readonly refused: readonly number[]; readonly notReplicated: readonly number[] };

/**
 * Why applyRecords' `refuse` turned a record away (undefined: apply it): `older-than-grace`, a
 * record of a key not held here older than the tombstone grace (a purged delete may have
 * superseded it); `not-replicated`, a key this node is none of the owners of (see replica.ts).
 */
export type RecordRefusal = 'older-than-grace' | 'not-replicated' | undefined;

export interface WriteOutcome {
  /** The record stored before this write on this node, if any and if applied locally. */
  readonly previous: Buffer | undefined;
}

/** One change to a stored record, applied to counts and the observer only once its commit is durable. */
interface RecordChange {
  readonly key: Buffer;
  readonly keyHash: number;
  readonly before: Buffer | undefined;
  readonly after: Buffer | undefined;
}

/** Work for the next shared write transaction: `run` executes inside it, in its own child transaction. */
interface WriteJob {
  run(changes: RecordChange[]): unknown;
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
  /** Schedules the group commit (`defer`) and the log's removal timer; default the system clock. */
  readonly clock?: Clock;
  /**
   * For the simulator only: every commit on this thread without fsync (LMDB noSync), so no real
   * I/O or worker thread reaches simulated time. A simulated crash loses the in-memory state,
   * not the page cache, which is what a process crash (not a power cut) does.
   */
  readonly simulated?: boolean;
  /** For the simulator and tests only: storage failures to inject (production passes none). */
  readonly storageFaults?: StorageFaults;
}

/**
 * Storage failures the simulator (and some tests) inject, asked at each write job and each
 * commit. A failing job throws after its writes, as an LMDB error midway through a job would; a
 * failing commit aborts the whole transaction, as a full disk (MDB_MAP_FULL) does.
 */
export interface StorageFaults {
  failJob(): boolean;
  failCommit(): boolean;
}

/** The error a StorageFaults failure throws. */
export class InjectedStorageError extends Error {}

/**
 * Told of every shared write transaction (see runTransaction), for metrics: the records its jobs
 * wrote, and the time from its start to its flush (what the writes in it waited for), or that it failed.
 */
export type CommitObserver = (commit: { readonly records: number; readonly durationMs: number; readonly failed: boolean }) => void;

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
  /** Reads the clock to persist with every transaction (see persistClockWith). */
  private clockSource: (() => ClockReading) | undefined;
  private persistedClock: ClockReading = { wallMs: 0, counter: 0 };
  /** Committed transactions' record changes, in commit order, until their flush is seen. */
  private readonly unflushedChanges: { readonly changes: RecordChange[]; readonly seq: number; flushed: boolean }[] = [];
  /** Write transactions whose body ran, counted (a batch's `seq`): see observeRecords. */
  private transactionsRun = 0;
  /** The observer was fed the stored records as of this many transactions: their batches are not fed to it again. */
  private replayedThroughSeq = 0;
  /** The observer being filled in pages by rebuildObserver, if one is. */
  private rebuild: ObserverRebuild | undefined;
  /** The `seq` of the last batch applied to the counts and observer (batches are applied in seq order). */
  private appliedThroughSeq = 0;
  /** Same-version, different-record pairs seen (see VersionCollision). */
  versionCollisions = 0;
  /** Set by abandon: no transaction runs any more. */
  private abandoned = false;
  private collisionListener: ((c: VersionCollision) => void) | undefined;
  private commitObserver: CommitObserver | undefined;
  private storageFaults: StorageFaults | undefined;

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
    private readonly clock: Clock = systemClock,
    private readonly simulated = false,
  ) {
    this.hints = new HintLog(hintsDb, peers, clock, simulated);
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
      const env = open({ path: join(options.dataDir, environmentFileName), maxDbs: 8, ...(options.simulated === true ? { noSync: true } : {}) });
      const meta = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
      const records = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
      const hints = env.openDB<Buffer, Buffer>({ name: 'hints', encoding: 'binary', keyEncoding: 'binary' });
      const hashIndex = env.openDB<Buffer, Buffer>({ name: 'hashindex', encoding: 'binary', keyEncoding: 'binary' });
      Repository.claimIdentity(meta, options);
      Repository.checkHashIndex(records, hashIndex);
      const repo = new Repository(env, records, meta, hints, hashIndex, lock, options.dataDir, options.peers, options.clock, options.simulated);
      repo.storageFaults = options.storageFaults;
      return repo;
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
    if (this.rebuild !== undefined) this.rebuild.cancelled = true;
    this.rebuild = undefined;
    this.observer = observer;
    // Replayed under the write lock: every transaction whose body ran is committed and in what
    // is read here, and none runs meanwhile. Their changes may not have reached the observer yet
    // (they are applied after the flush), so those batches are not fed to it again.
    this.env.transactionSync(() => {
      for (const { key, value } of this.records.getRange({})) {
        observer(key, murmur3x86_32(key, keyHashSeed), undefined, recordHeader(value));
      }
      this.replayedThroughSeq = this.transactionsRun;
    });
  }

  /**
   * Replaces the observer with `next` without stopping commits (an incremental observeRecords):
   * feeds every stored record to `next` in pages of `pageRecords`, in key order, each read under
   * the write lock with the number of transactions it includes, and yields a turn between pages.
   * Meanwhile the current observer gets every change as before, and `next` gets a change only
   * if its key lies in a page already read and its transaction came after that page's read
   * (earlier ones are in what the page read; keys not read yet are read as they are then). With
   * the last page, still under the write lock, `next` becomes the observer and `onSwap` runs,
   * so whoever answers from `next` swaps to it with no commit in between. A later call, or
   * observeRecords, cancels a rebuild in progress (its `next` is dropped, `onSwap` never runs).
   * Resolves once swapped; rejects if cancelled.
   */
  async rebuildObserver(next: RecordObserver, onSwap: () => void, pageRecords: number): Promise<void> {
    // One swapped a moment ago keeps its page rule until the batches committed before its swap
    // are applied (a few, in flight then): let it finish, or the current observer would miss them.
    for (let turn = 0; this.rebuild?.finalSeq !== undefined && turn < rebuildSettleTurnsMax; turn++) await nextTurn(this.clock);
    const rebuild: ObserverRebuild = { observer: next, pageEnds: [], pageSeqs: [], finalSeq: undefined, cancelled: false };
    if (this.rebuild !== undefined) this.rebuild.cancelled = true;
    this.rebuild = rebuild;
    let after: Buffer | undefined;
    for (;;) {
      await nextTurn(this.clock);
      if (rebuild.cancelled) throw new Error('observer rebuild cancelled by a newer one');
      let last = false;
      this.env.transactionSync(() => {
        let read = 0;
        let end: Buffer | undefined;
        for (const { key, value } of this.records.getRange({ start: after === undefined ? undefined : keyAfterCursor(after), limit: pageRecords })) {
          next(key, murmur3x86_32(key, keyHashSeed), undefined, recordHeader(value));
          end = key;
          read++;
        }
        if (read < pageRecords) {
          // The whole key space is read: swap now, under the lock.
          rebuild.finalSeq = this.transactionsRun;
          this.observer = next;
          this.replayedThroughSeq = this.transactionsRun;
          onSwap();
          last = true;
          return;
        }
        rebuild.pageEnds.push(Buffer.from(end!));
        rebuild.pageSeqs.push(this.transactionsRun);
        after = Buffer.from(end!);
      });
      if (last) break;
    }
    // Batches committed before the swap but not yet applied still need the page rule; the last of
    // them ends it (applyChanges). Not read from unflushedChanges: a committed batch joins it only
    // once its commit's continuation has run, which may be after the swap.
    if (this.appliedThroughSeq >= rebuild.finalSeq! && this.rebuild === rebuild) this.rebuild = undefined;
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

  /**
   * One page of the records whose key hash lies in (startExclusive, endInclusive], in hash-index
   * order (key hash from startExclusive + 1 on, wrapping past 2^32 - 1 to 0; ties by key bytes),
   * tombstones included; `startExclusive === endInclusive` is the whole circle, as for a ring's
   * only range (RingRange). `after` is a hash-index key (4-byte BE key hash, then the key: a
   * previous page's `next`) the page starts strictly after; it need not be stored any more, but
   * its hash must lie in the interval. The page holds at least one record when any remain, and
   * otherwise stops before the record that would take it past `maxBytes`, each record counted as
   * `key.length + record.length + framingBytes` (the peer service passes message-bytes.ts's
   * recordFramingBytesMax, so pages are bounded as its other answers are). `next` is the
   * hash-index key of the page's last record (`after` when the page is empty); `done` is true
   * when no record of the interval comes after the page.
   */
  recordsInHashIntervalPage(startExclusive: number, endInclusive: number, after: Buffer | undefined, maxBytes: number, framingBytes = 0): { records: StoredRecord[]; next: Buffer | undefined; done: boolean } {
    const records: StoredRecord[] = [];
    let next = after;
    let bytes = 0;
    // The interval as one or two segments of hashes, in streaming order.
    const segments: [number, number][] = [];
    if (startExclusive < endInclusive) segments.push([startExclusive + 1, endInclusive]);
    else {
      if (startExclusive < 0xffffffff) segments.push([startExclusive + 1, 0xffffffff]);
      segments.push([0, endInclusive]);
    }
    let first = 0;
    if (after !== undefined) {
      if (after.length < 4) throw new RangeError(`a hash-index cursor is at least 4 bytes (got ${after.length})`);
      const afterHash = after.readUInt32BE(0);
      first = segments.findIndex(([from, to]) => afterHash >= from && afterHash <= to);
      if (first < 0) throw new RangeError(`cursor hash ${afterHash.toString(16).padStart(8, '0')} lies outside the interval (${startExclusive.toString(16).padStart(8, '0')}, ${endInclusive.toString(16).padStart(8, '0')}]`);
    }
    for (let s = first; s < segments.length; s++) {
      const [from, to] = segments[s]!;
      let start: Buffer;
      if (s === first && after !== undefined) start = keyAfterCursor(after);
      else {
        start = Buffer.alloc(4);
        start.writeUInt32BE(from);
      }
      const end = to < 0xffffffff ? Buffer.alloc(4) : undefined;
      end?.writeUInt32BE(to + 1);
      for (const { key } of this.hashIndex.getRange({ start, end })) {
        const userKey = key.subarray(4);
        const record = this.records.get(userKey);
        if (record === undefined) continue;
        const size = userKey.length + record.length + framingBytes;
        if (records.length > 0 && bytes + size > maxBytes) return { records, next, done: false };
        bytes += size;
        records.push({ key: Buffer.from(userKey), record });
        next = Buffer.from(key);
      }
    }
    return { records, next, done: true };
  }

  /** A receiver's stream cursor `transfer/<name>` (src/replication/range-streamer.ts encodes it), if any. */
  transferCursor(name: string): Buffer | undefined {
    return this.meta.get(metaTransferPrefix + name);
  }

  /**
   * Persists the stream cursor `transfer/<name>` (undefined: deletes it), durably before
   * resolving, as storeMembershipBytes: committed at once, on disk once the promise resolves.
   */
  storeTransferCursor(name: string, bytes: Buffer | undefined): Promise<void> {
    const key = metaTransferPrefix + name;
    this.meta.transactionSync(() => {
      if (bytes === undefined) this.meta.removeSync(key);
      else this.meta.putSync(key, bytes);
    });
    return this.metaFlushed();
  }

  /** The names (without `transfer/`) of the stream cursors whose name starts with `prefix`, in key order. */
  transferCursorNames(prefix: string): string[] {
    const start = metaTransferPrefix + prefix;
    const out: string[] = [];
    for (const key of this.meta.getKeys({ start })) {
      if (typeof key !== 'string' || !key.startsWith(start)) break;
      out.push(key.slice(metaTransferPrefix.length));
    }
    return out;
  }

  /**
   * Stores `record` for `key` over `previous` inside a write transaction, keeping the index
   * current; the change goes to `changes`, for counts and the observer once the commit is durable.
   */
  private storeInTransaction(key: Buffer, record: Buffer, previous: Buffer | undefined, changes: RecordChange[]): void {
    this.records.putSync(key, record);
    const keyHash = murmur3x86_32(key, keyHashSeed);
    // The index lists keys, not versions: only a new key adds an entry. Overwrites (most writes)
    // then cost one B-tree insert instead of two, which halves the pages a commit writes.
    if (previous === undefined) this.hashIndex.putSync(hashIndexKey(key, keyHash), emptyIndexValue);
    changes.push({ key, keyHash, before: previous, after: record });
  }

  /**
   * Last-writer-wins: whether `record` replaces `stored`. Equal versions with different bytes
   * must never happen (every version is issued once); if they do, they are counted and logged,
   * and the byte-wise larger record wins so that replicas still converge.
   */
  private supersedes(key: Buffer, record: Buffer, stored: Buffer | undefined): boolean {
    if (stored === undefined) return true;
    const cmp = compareRecords(record, stored);
    if (isVersionCollision(cmp)) {
      this.versionCollisions++;
      this.collisionListener?.({ key: Buffer.from(key), stored: Buffer.from(stored), received: Buffer.from(record) });
    }
    return cmp > 0;
  }

  /** Reports every shared write transaction to `observer` (a later call replaces it). */
  onCommit(observer: CommitObserver): void {
    this.commitObserver = observer;
  }

  /** Called for every version collision seen (see supersedes). */
  onVersionCollision(listener: (c: VersionCollision) => void): void {
    this.collisionListener = listener;
  }

  /**
   * Persists `source()` (the HLC's reading) with every write transaction whose reading moved
   * since the last one: versions observed from peers raise the high-water mark too, not only
   * the versions this node issues.
   */
  persistClockWith(source: () => ClockReading): void {
    this.clockSource = source;
  }

  /** Refuses a record before it joins a transaction, so one bad record never fails the others. */
  private static checkStorable(key: Uint8Array, record: Uint8Array): void {
    if (key.length === 0) throw new UnstorableRecordError('record has an empty key');
    if (key.length > storableKeyBytesMax) throw new UnstorableRecordError(`record key is ${key.length} bytes; at most ${storableKeyBytesMax} can be stored`);
    try {
      isTombstoneRecord(record);
    } catch (err) {
      if (err instanceof RecordDecodeError) throw new UnstorableRecordError(`record for a ${key.length}-byte key is malformed: ${err.message}`);
      throw err;
    }
  }

  /**
   * When the backup this data dir was restored from was taken (Unix ms), if it was restored and
   * has not started since (see markRestored).
   */
  restoredFromBackupAtMs(): number | undefined {
    return this.meta.get(metaRestoredFrom)?.readUIntBE(0, 6);
  }

  /** The node started on its restored data: forget the mark. */
  async clearRestoredMark(): Promise<void> {
    await this.meta.remove(metaRestoredFrom);
    await this.env.flushed;
  }

  /**
   * Marks an environment file (a staged restore, not open elsewhere) as restored from a backup
   * taken at `backupTakenAtMs`, so the node checks the backup's age when it starts.
   */
  static async markRestored(environmentFile: string, backupTakenAtMs: number): Promise<void> {
    const env = open({ path: environmentFile, maxDbs: 8 });
    try {
      const meta = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
      const buf = Buffer.alloc(6);
      buf.writeUIntBE(backupTakenAtMs, 0, 6);
      await meta.put(metaRestoredFrom, buf);
      await env.flushed;
    } finally {
      await env.close();
    }
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
      if (isTombstoneRecord(value) && recordWallMs(value) < cutoffMs) victims.push(key);
    }
    let purged = 0;
    if (victims.length > 0) {
      purged = await this.purgeExact(victims.map((key) => ({ key, header: undefined })), cutoffMs);
    }
    return { cursor: scanned < scanMax ? undefined : last, purged };
  }

  /**
   * Tombstone candidates: up to `max` tombstones, in key order after `cursor`, whose version wall
   * time is before `cutoffMs`, scanning at most `scanMax` records. `next` is where to continue
   * (undefined when the scan reached the end).
   */
  tombstonesBefore(cutoffMs: number, cursor: Buffer | undefined, scanMax: number): { tombstones: StoredRecord[]; next: Buffer | undefined } {
    const tombstones: StoredRecord[] = [];
    let last: Buffer | undefined;
    let scanned = 0;
    for (const { key, value } of this.records.getRange({ start: cursor === undefined ? undefined : keyAfterCursor(cursor), limit: scanMax })) {
      scanned++;
      last = key;
      if (isTombstoneRecord(value) && recordWallMs(value) < cutoffMs) tombstones.push({ key, record: Buffer.from(recordHeader(value)) });
    }
    return { tombstones, next: scanned < scanMax ? undefined : last };
  }

  /**
   * Deletes each key's record if it is still exactly the given tombstone (`header`: its version
   * header) — or, with no header, any tombstone older than `cutoffMs`. Durable on return;
   * returns how many were deleted.
   */
  async purgeExact(victims: readonly { key: Buffer; header: Buffer | undefined }[], cutoffMs = 0): Promise<number> {
    if (victims.length === 0) return 0;
    return this.enqueue((changes) => {
      let n = 0;
      for (const { key, header } of victims) {
        const stored = this.records.get(key);
        // Re-checked inside the transaction: a newer write may have replaced the tombstone.
        if (stored === undefined || !isTombstoneRecord(stored)) continue;
        if (header !== undefined ? !recordHeader(stored).equals(header) : recordWallMs(stored) >= cutoffMs) continue;
        this.removeInTransaction(key, stored, changes);
        n++;
      }
      return n;
    }, victims.length);
  }

  /** Removes `key`'s record (`stored`) and its hash-index entry inside a write transaction; the change goes to `changes`. */
  private removeInTransaction(key: Buffer, stored: Buffer, changes: RecordChange[]): void {
    const keyHash = murmur3x86_32(key, keyHashSeed);
    this.records.removeSync(key);
    this.hashIndex.removeSync(hashIndexKey(key, keyHash));
    changes.push({ key, keyHash, before: stored, after: undefined });
  }

  /**
   * Keys after `startAfter` (exclusive; empty: from the first) in key order, at most `limit`: the
   * cleanup after a membership change walks every stored key with it.
   */
  keysAfter(startAfter: Buffer, limit: number): Buffer[] {
    const out: Buffer[] = [];
    for (const key of this.records.getKeys({ start: startAfter.length === 0 ? undefined : startAfter, limit: limit + 1 })) {
      if (startAfter.length > 0 && key.equals(startAfter)) continue;
      out.push(Buffer.from(key));
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * Deletes the records of `keys` this node no longer holds a replica of after a membership
   * change, re-checking `unowned` inside the write transaction; counts, hash trees and the hash
   * index stay in step (through the commit queue). Answers how many were deleted.
   */
  async deleteUnowned(keys: readonly Buffer[], unowned: (key: Buffer) => boolean): Promise<number> {
    if (keys.length === 0) return 0;
    return this.enqueue((changes) => {
      let n = 0;
      for (const key of keys) {
        if (!unowned(key)) continue;
        const stored = this.records.get(key);
        if (stored === undefined) continue;
        this.removeInTransaction(key, stored, changes);
        n++;
      }
      return n;
    }, keys.length);
  }

  /** The persisted membership document (src/cluster/membership.ts encodes it), if any. */
  membershipBytes(): Buffer | undefined {
    return this.meta.get(metaMembership);
  }

  /**
   * Persists the membership document: committed at once (a failed commit throws here, and a
   * caller that does not wait still reads it back), durable once the promise resolves. The
   * synchronous commit alone is not: lmdb-js syncs it to disk after the commit (overlapping
   * sync), as `env.flushed` tells.
   */
  storeMembershipBytes(bytes: Buffer): Promise<void> {
    this.meta.transactionSync(() => this.meta.putSync(metaMembership, bytes));
    return this.metaFlushed();
  }

  /** The persisted membership acceptor state (src/cluster/membership-agreement.ts encodes it), if any. */
  acceptorBytes(): Buffer | undefined {
    return this.meta.get(metaMembershipAcceptor);
  }

  /**
   * Persists the membership acceptor state (undefined: deletes it), durably before resolving, as
   * storeMembershipBytes: an acceptor answers only once its promise would survive a crash.
   */
  storeAcceptorBytes(bytes: Uint8Array | undefined): Promise<void> {
    this.meta.transactionSync(() => {
      if (bytes === undefined) this.meta.removeSync(metaMembershipAcceptor);
      else this.meta.putSync(metaMembershipAcceptor, Buffer.from(bytes));
    });
    return this.metaFlushed();
  }

  /** Resolves once what was committed is on disk (at once when simulated: no real I/O may be awaited). */
  private async metaFlushed(): Promise<void> {
    if (!this.simulated) await this.env.flushed;
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
  async commitWrite(key: Buffer, record: Buffer, applyLocally: boolean, reserved: ReservedEntries | undefined, clock?: ClockReading): Promise<WriteOutcome> {
    try {
      Repository.checkStorable(key, record);
      return await this.enqueue((changes): WriteOutcome => {
        let previous: Buffer | undefined;
        if (applyLocally) {
          previous = this.records.get(key);
          if (this.supersedes(key, record, previous)) this.storeInTransaction(key, record, previous, changes);
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
  applyRecords(batch: readonly StoredRecord[], wantPrevious: readonly number[] = [], refuse?: (key: Buffer, record: Buffer, stored: Buffer | undefined) => RecordRefusal): Promise<ApplyOutcome> {
    try {
      for (const { key, record } of batch) Repository.checkStorable(key, record);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.enqueue((changes) => this.applyInTransaction(batch, wantPrevious, refuse, changes), batch.length);
  }

  /**
   * applyRecords of one page a range stream received, with its stream cursor
   * (storeTransferCursor's `name` and bytes) in the same transaction: the cursor can never run
   * ahead of the records it covers, and a page costs one commit instead of two.
   */
  applyStreamPage(batch: readonly StoredRecord[], cursorName: string, cursor: Buffer): Promise<void> {
    try {
      for (const { key, record } of batch) Repository.checkStorable(key, record);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.enqueue((changes) => {
      this.applyInTransaction(batch, [], undefined, changes);
      this.meta.putSync(metaTransferPrefix + cursorName, cursor);
    }, batch.length);
  }

  /** The body of applyRecords, inside a write transaction's job: the LWW merge of each record, and the refusals. */
  private applyInTransaction(batch: readonly StoredRecord[], wantPrevious: readonly number[], refuse: ((key: Buffer, record: Buffer, stored: Buffer | undefined) => RecordRefusal) | undefined, changes: RecordChange[]): ApplyOutcome {
    const before: (Buffer | undefined)[] = new Array(wantPrevious.length);
    const refused: number[] = [];
    const notReplicated: number[] = [];
    const wanted = new Map<number, number>();
    wantPrevious.forEach((index, i) => wanted.set(index, i));
    batch.forEach(({ key, record }, index) => {
      const stored = this.records.get(key);
      const slot = wanted.get(index);
      if (slot !== undefined) before[slot] = stored;
      // Asked inside the transaction: a membership change adopted meanwhile is seen.
      const refusal = refuse?.(key, record, stored);
      if (refusal === 'older-than-grace') refused.push(index);
      else if (refusal === 'not-replicated') notReplicated.push(index);
      else if (this.supersedes(key, record, stored)) this.storeInTransaction(key, record, stored, changes);
    });
    return Object.assign(before, { refused, notReplicated });
  }

  /** Queues `run` for the next shared write transaction; resolves with its result once flushed. */
  private enqueue<T>(run: (changes: RecordChange[]) => T, records: number, clock?: ClockReading): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.writeJobs.push({ run, records, clock, resolve: resolve as (value: unknown) => void, reject });
      this.scheduleTransaction();
    });
  }

  private scheduleTransaction(): void {
    if (this.abandoned) {
      for (const job of this.writeJobs.splice(0)) job.reject(new Error('the node crashed before this write committed'));
      return;
    }
    if (this.transactionRunning || this.transactionScheduled || this.writeJobs.length === 0) return;
    this.transactionScheduled = true;
    this.clock.defer(() => {
      this.transactionScheduled = false;
      if (this.abandoned) {
        this.scheduleTransaction();
        return;
      }
      void this.runTransaction();
    });
  }

  /**
   * Group commit: runs every queued write job (coordinated writes and the batches received from
   * every peer) in one LMDB transaction, with at most one of ours committing at a time; what
   * arrives meanwhile waits for the next. The profile showed the cost of a batch round (a
   * transaction callback, its hand-off to lmdb-js's write thread, its commit and fsync, per
   * source) dominating at 128 clients, so a node's own batch and its peers' share one.
   *
   * Isolation: each job runs in its own child transaction, so a job that throws is rolled back
   * alone and fails alone; the others commit. Record counts and the observer (hash trees) change
   * only after the commit is flushed, so they always describe what LMDB holds. A failed commit
   * (a full disk) fails every job in it, and changes nothing.
   */
  private async runTransaction(): Promise<void> {
    const jobs = this.writeJobs;
    this.writeJobs = [];
    this.transactionRunning = true;
    const startedMs = this.clock.monotonicMs();
    const results: unknown[] = new Array(jobs.length);
    const failures: (unknown | undefined)[] = new Array(jobs.length);
    const changes: RecordChange[] = [];
    let records = 0;
    for (const job of jobs) records += job.records;
    const observed = (failed: boolean) => this.commitObserver?.({ records, durationMs: this.clock.monotonicMs() - startedMs, failed });
    let drained = noRemovals;
    let clockToPersist: ClockReading | undefined;
    let seq = 0;
    const body = () => {
      seq = ++this.transactionsRun;
      jobs.forEach((job, i) => {
        const jobChanges: RecordChange[] = [];
        try {
          results[i] = this.env.childTransaction(() => {
            const result = job.run(jobChanges);
            if (this.storageFaults?.failJob() === true) throw new InjectedStorageError('simulated storage failure in a write job');
            return result;
          });
          for (const c of jobChanges) changes.push(c);
        } catch (err) {
          failures[i] = err;
        }
      });
      let clock = this.clockSource?.();
      for (const job of jobs) if (job.clock !== undefined && (clock === undefined || laterReading(job.clock, clock))) clock = job.clock;
      if (clock !== undefined && laterReading(clock, this.persistedClock)) {
        this.meta.putSync(metaClock, encodeClock(clock));
        clockToPersist = clock;
      }
      drained = this.hints.drainRemovalsInTransaction();
      if (this.storageFaults?.failCommit() === true) throw new InjectedStorageError('simulated storage failure: the commit did not happen (as with a full disk)');
    };
    try {
      // A transaction of a few records (light load) commits on this thread: handing it to lmdb-js's
      // write thread and back cost ~95-170 µs of latency and ~115-165 µs of CPU per commit
      // (BENCHMARKS.md, Session 4), which pays off only when there is other work to overlap with the commit.
      // Both paths fdatasync once per commit (checked with strace).
      // Tried and measured (BENCHMARKS.md, "Unary path"): taking the write thread whenever the
      // previous commit ended under 2 ms ago cost a lone put ~400 µs of server CPU and did not
      // raise unary throughput at 128 clients, so the rule stays the record count alone.
      if (records <= syncCommitRecordsMax || this.simulated) this.env.transactionSync(body);
      // On the write thread the body runs as a child transaction: lmdb-js commits what an async
      // transaction callback wrote before it threw (write.js executeTxnCallbacks only hands the
      // error to its promise), and a failed batch must change nothing (transactionSync aborts).
      else await this.env.transaction(() => this.env.childTransaction(body));
    } catch (err) {
      this.hints.requeueRemovals(drained);
      // A batch that never committed is never applied: it must not hold a rebuild's page rule open.
      if (seq > 0 && this.unflushedChanges.length === 0) this.settleFailedBatch(seq);
      this.transactionRunning = false;
      this.scheduleTransaction();
      observed(true);
      const reported = this.describeWriteFailure(err);
      for (const job of jobs) job.reject(reported);
      return;
    }
    // Committed: the next transaction may start while this one's flush runs.
    if (clockToPersist !== undefined) this.persistedClock = clockToPersist;
    const batch = { changes, seq, flushed: false };
    this.unflushedChanges.push(batch);
    this.transactionRunning = false;
    this.scheduleTransaction();
    try {
      // Simulated: committed without fsync, nothing to wait for (and no real I/O may be awaited).
      if (!this.simulated) await this.env.flushed;
    } catch (err) {
      observed(true);
      const reported = this.describeWriteFailure(err);
      for (const job of jobs) job.reject(reported);
      return;
    }
    observed(false);
    // Counts and trees follow commit order, whatever order the flushes are seen in.
    batch.flushed = true;
    while (this.unflushedChanges.length > 0 && this.unflushedChanges[0]!.flushed) {
      const done = this.unflushedChanges.shift()!;
      this.applyChanges(done.changes, done.seq);
    }
    jobs.forEach((job, i) => (failures[i] === undefined ? job.resolve(results[i]) : job.reject(failures[i])));
  }

  /**
   * Committed and flushed: counts and the observer catch up with what LMDB now holds. Counts
   * always; the observer unless it was replayed these changes already (observeRecords); an
   * observer being rebuilt by the page rule (rebuildObserver), which it keeps after its swap
   * until every batch committed before the swap is applied.
   */
  private applyChanges(changes: readonly RecordChange[], seq: number): void {
    const rebuild = this.rebuild;
    const swapped = rebuild?.finalSeq !== undefined;
    for (const { key, keyHash, before, after } of changes) {
      this.counts.records += (after === undefined ? 0 : 1) - (before === undefined ? 0 : 1);
      this.counts.live += (after === undefined || isTombstoneRecord(after) ? 0 : 1) - (before === undefined || isTombstoneRecord(before) ? 0 : 1);
      const beforeHeader = before === undefined ? undefined : recordHeader(before);
      const afterHeader = after === undefined ? undefined : recordHeader(after);
      if (!swapped && seq > this.replayedThroughSeq) this.observer?.(key, keyHash, beforeHeader, afterHeader);
      if (rebuild !== undefined && readBefore(rebuild, key, seq)) rebuild.observer(key, keyHash, beforeHeader, afterHeader);
    }
    this.appliedThroughSeq = seq;
    if (swapped && seq >= rebuild.finalSeq! && this.rebuild === rebuild) this.rebuild = undefined;
  }

  /** A batch whose commit failed counts as applied (nothing of it is in LMDB), for the rebuild's rule. */
  private settleFailedBatch(seq: number): void {
    this.appliedThroughSeq = Math.max(this.appliedThroughSeq, seq);
    const rebuild = this.rebuild;
    if (rebuild?.finalSeq !== undefined && seq >= rebuild.finalSeq) this.rebuild = undefined;
  }

  /** A failed commit as callers should see it: a full disk says so, and where. */
  private describeWriteFailure(err: unknown): unknown {
    let freeBytes: number;
    try {
      const fs = statfsSync(this.dataDir);
      freeBytes = fs.bavail * fs.bsize;
    } catch {
      return err;
    }
    const message = err instanceof Error ? err.message : String(err);
    const code = (err as { code?: unknown }).code;
    if (freeBytes < diskFullFreeBytesMax || code === 'ENOSPC' || /no space left|MDB_MAP_FULL/i.test(message)) {
      return new DiskFullError(
        `disk full: the filesystem of data dir ${this.dataDir} has ${freeBytes} bytes free and LMDB could not commit (${message}); ` +
          'nothing of this write was applied on this node: free space and retry',
      );
    }
    return err;
  }

  /**
   * One page of records in key order, as version headers only (no values): keys starting with
   * `prefix` and strictly after `startAfter`, tombstones included. Listings need nothing more,
   * and copying whole values made a listing of 1 MiB values cost a page of them in memory.
   */
  scanHeaders(prefix: Uint8Array, startAfter: Uint8Array, limit: number): StoredRecord[] {
    const { start, end } = scanBounds(prefix, startAfter);
    const out: StoredRecord[] = [];
    const pageLimit = Math.min(Math.max(1, limit), scanPageRecordsMax);
    for (const key of this.records.getKeys({ start, end, limit: pageLimit })) {
      const header = this.getRecordHeader(key);
      if (header !== undefined) out.push({ key, record: header });
    }
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

  /**
   * A simulated crash: what is committed stays (LMDB), everything in memory is lost. Queued
   * writes fail and never commit, delivered log entries not yet deleted stay in the log (they are
   * sent again, as after a real crash), and the environment is closed.
   */
  async abandon(): Promise<void> {
    this.abandoned = true;
    this.hints.abandonRemovals();
    const jobs = this.writeJobs;
    this.writeJobs = [];
    for (const job of jobs) job.reject(new Error('the node crashed before this write committed'));
    try {
      await this.env.close();
    } finally {
      this.lock?.release();
    }
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

/**
 * Turns a new rebuild waits for the previous one's last batches (committed before its swap) to
 * be applied; past it the previous rule is dropped (a commit failure may leave it open until the
 * next write: the trees are then rebuilt anyway).
 */
const rebuildSettleTurnsMax = 1000;

/** An observer being filled in pages (see rebuildObserver). */
interface ObserverRebuild {
  readonly observer: RecordObserver;
  /** The last key of each page read, ascending, and the transactions run when it was read. */
  readonly pageEnds: Buffer[];
  readonly pageSeqs: number[];
  /** Set with the last page (which reads every key left), when the observer is swapped in. */
  finalSeq: number | undefined;
  cancelled: boolean;
}

/**
 * Whether a change to `key` in transaction `seq` must be fed to the rebuilt observer: its key
 * was read in a page whose read came before that transaction (after the swap, a key past every
 * page's end was read by the last page, as of finalSeq).
 */
function readBefore(rebuild: ObserverRebuild, key: Buffer, seq: number): boolean {
  const { pageEnds, pageSeqs } = rebuild;
  let lo = 0;
  let hi = pageEnds.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (Buffer.compare(pageEnds[mid]!, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  const pageSeq = lo < pageEnds.length ? pageSeqs[lo]! : rebuild.finalSeq;
  return pageSeq !== undefined && seq > pageSeq;
}

function keyAfterCursor(cursor: Buffer): Buffer {
  const out = Buffer.alloc(cursor.length + 1);
  cursor.copy(out);
  return out;
}
