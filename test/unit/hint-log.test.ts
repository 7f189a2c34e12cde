import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ABORT, type Database, type RootDatabase, open as openLmdb } from 'lmdb';
import { type HintEntry, HintLog, type ReservedEntries, hintRemovalBatchEntries, hintTailBytesMax, hintTailEntriesMax, noRemovals } from '../../src/storage/hint-log.js';
import { systemClock } from '../../src/platform/clock.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { Repository, recordHeader } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * The replication log (HintLog) through the Repository that writes it, on real LMDB in a temp
 * dir: what commitWrite appends is what read() hands out, in sequence order, whether it comes
 * from the in-memory tail of newest committed entries or from LMDB (after a reopen, or for a
 * peer further behind than the tail holds).
 */

const peers = ['n2', 'n3'] as const;
const unlimited = Number.MAX_SAFE_INTEGER;
const wallBase = 1_700_000_000_000;

let openRepos: Repository[] = [];
let dirs: string[] = [];

afterEach(async () => {
  const repos = openRepos;
  openRepos = [];
  try {
    for (const repo of repos) await repo.close();
  } finally {
    for (const dir of dirs) removeTempDir(dir);
    dirs = [];
  }
});

function newDataDir(): string {
  const dir = makeTempDir('kvstore-hintlog-');
  dirs.push(dir);
  return join(dir, 'data');
}

function open(dataDir: string): Repository {
  const repo = Repository.open({ dataDir, nodeId: 'n1', peers });
  openRepos.push(repo);
  return repo;
}

async function close(repo: Repository): Promise<void> {
  openRepos = openRepos.filter((r) => r !== repo);
  await repo.close();
}

/** Write number i (0-based, in commit order): its key, and a record whose value size varies with i. */
function keyOf(i: number): Buffer {
  return Buffer.from(`key-${String(i).padStart(6, '0')}`);
}

function recordOf(i: number): Buffer {
  return encodeRecord({ version: { wallMs: wallBase + i, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.from(`v${i}:${'x'.repeat(i % 7)}`) });
}

/** Commits writes first..first+count-1 in one transaction (one event-loop turn); returns each one's log sequences. */
async function commitBatch(repo: Repository, first: number, count: number, to: readonly string[] = peers): Promise<ReadonlyMap<string, number>[]> {
  const seqs = Array.from({ length: count }, () => new Map<string, number>());
  await Promise.all(
    Array.from({ length: count }, (_, j) => {
      const i = first + j;
      const reserved = repo.hints.reserve(to, keyOf(i), recordOf(i), wallBase + i);
      for (const { peer, seq } of reserved.entries) seqs[j]!.set(peer, seq);
      return repo.commitWrite(keyOf(i), recordOf(i), true, reserved, { wallMs: wallBase + i, counter: 0 });
    }),
  );
  return seqs;
}

/** Write i is entry seq i + 1 in every peer's queue (every write is logged for both peers). */
function expectWrites(entries: readonly HintEntry[], peer: string, firstWrite: number, count: number): void {
  expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: count }, (_, j) => firstWrite + j + 1));
  entries.forEach((e, j) => {
    const i = firstWrite + j;
    expect(e.peer).toBe(peer);
    expect(e.key.toString(), `key of seq ${e.seq}`).toBe(keyOf(i).toString());
    expect(e.record.toString('hex'), `record of seq ${e.seq}`).toBe(recordOf(i).toString('hex'));
  });
}

/**
 * Whether a read is served from the in-memory tail: the tail hands out its own entry objects, so
 * two reads of the same range return the very same objects; LMDB reads decode fresh ones.
 */
function servedFromMemory(repo: Repository, peer: string, afterSeq: number, maxEntries = 8): boolean {
  const a = repo.hints.read(peer, afterSeq, maxEntries, unlimited);
  const b = repo.hints.read(peer, afterSeq, maxEntries, unlimited);
  expect(b.map((e) => e.seq)).toEqual(a.map((e) => e.seq));
  expect(a.length).toBeGreaterThan(0);
  return a.every((e, i) => e === b[i]);
}

/** Every entry after `afterSeq`, by successive reads that each continue after the last sequence returned. */
function readAll(repo: Repository, peer: string, afterSeq: number, maxEntries: number): HintEntry[] {
  const out: HintEntry[] = [];
  let last = afterSeq;
  for (;;) {
    const page = repo.hints.read(peer, last, maxEntries, unlimited);
    if (page.length === 0) return out;
    expect(page.length).toBeLessThanOrEqual(maxEntries);
    out.push(...page);
    last = page[page.length - 1]!.seq;
  }
}

/** The fields that must survive the trip through LMDB. */
function persisted(entries: readonly HintEntry[]) {
  return entries.map((e) => ({ peer: e.peer, seq: e.seq, enqueuedAtMs: e.enqueuedAtMs, key: e.key.toString('hex'), record: e.record.toString('hex'), bytes: e.bytes }));
}

describe('HintLog through Repository.commitWrite (real LMDB)', () => {
  it('getRecordHeader copies out the version header of what commitWrite stored, and survives later reads', async () => {
    const repo = open(newDataDir());
    await commitBatch(repo, 0, 2);
    const header = repo.getRecordHeader(keyOf(0));
    repo.getRecordHeader(keyOf(1)); // reuses lmdb-js's read buffer
    expect(header?.toString('hex')).toBe(recordHeader(recordOf(0)).toString('hex'));
    expect(repo.getRecordHeader(Buffer.from('absent'))).toBeUndefined();
  });

  it('returns committed entries in sequence order for every peer, from memory, and the same entries from LMDB after a reopen', async () => {
    const dataDir = newDataDir();
    let repo = open(dataDir);
    const seqs = [...(await commitBatch(repo, 0, 5)), ...(await commitBatch(repo, 5, 3))];
    seqs.forEach((bySeq, i) => {
      for (const peer of peers) expect(bySeq.get(peer), `seq of write ${i} for ${peer}`).toBe(i + 1);
    });

    const before = new Map<string, HintEntry[]>();
    for (const peer of peers) {
      const entries = repo.hints.read(peer, 0, 100, unlimited);
      expectWrites(entries, peer, 0, 8);
      expect(servedFromMemory(repo, peer, 0)).toBe(true);
      expect(repo.hints.stats(peer).entries).toBe(8);
      before.set(peer, entries);
    }
    // The writes were applied locally too.
    expect(repo.getRecord(keyOf(7))?.toString('hex')).toBe(recordOf(7).toString('hex'));

    await close(repo);
    repo = open(dataDir);
    for (const peer of peers) {
      const entries = repo.hints.read(peer, 0, 100, unlimited);
      expectWrites(entries, peer, 0, 8);
      expect(persisted(entries)).toEqual(persisted(before.get(peer)!));
      expect(servedFromMemory(repo, peer, 0)).toBe(false);
      expect(repo.hints.read(peer, 5, 100, unlimited).map((e) => e.seq)).toEqual([6, 7, 8]);
      expect(repo.hints.stats(peer).entries).toBe(8);
    }

    // Sequences continue after the reopen; the new entries are in memory, the old ones still in LMDB.
    const more = await commitBatch(repo, 8, 2);
    expect(more.map((m) => m.get('n2'))).toEqual([9, 10]);
    for (const peer of peers) {
      expectWrites(repo.hints.read(peer, 0, 100, unlimited), peer, 0, 10);
      expect(servedFromMemory(repo, peer, 0)).toBe(false);
      expect(servedFromMemory(repo, peer, 8)).toBe(true);
      expectWrites(repo.hints.read(peer, 8, 100, unlimited), peer, 8, 2);
    }
  });

  it('after remove() of the oldest entries a read from 0 starts right after them, in memory and after a reopen', async () => {
    const dataDir = newDataDir();
    let repo = open(dataDir);
    await commitBatch(repo, 0, 6);
    const firstFew = repo.hints.read('n2', 0, 3, unlimited);
    expect(firstFew.map((e) => e.seq)).toEqual([1, 2, 3]);
    repo.hints.remove(firstFew);

    expectWrites(repo.hints.read('n2', 0, 100, unlimited), 'n2', 3, 3);
    expectWrites(repo.hints.read('n2', 2, 100, unlimited), 'n2', 3, 3);
    expect(repo.hints.oldest('n2')?.seq).toBe(4);
    expect(repo.hints.isGone('n2', 3)).toBe(true);
    expect(repo.hints.isGone('n2', 4)).toBe(false);
    expect(repo.hints.stats('n2').entries).toBe(3);
    // The other peer's queue is untouched.
    expectWrites(repo.hints.read('n3', 0, 100, unlimited), 'n3', 0, 6);
    expect(repo.hints.stats('n3').entries).toBe(6);

    await close(repo);
    repo = open(dataDir);
    expectWrites(repo.hints.read('n2', 0, 100, unlimited), 'n2', 3, 3);
    expect(repo.hints.stats('n2').entries).toBe(3);
    expectWrites(repo.hints.read('n3', 0, 100, unlimited), 'n3', 0, 6);
    expect(repo.hints.stats('n3').entries).toBe(6);

    // Removing everything left empties the queue for good.
    repo.hints.remove(repo.hints.read('n2', 0, 100, unlimited));
    expect(repo.hints.read('n2', 0, 100, unlimited)).toEqual([]);
    expect(repo.hints.stats('n2')).toMatchObject({ entries: 0, bytes: 0, oldestEnqueuedAtMs: undefined });
    await close(repo);
    repo = open(dataDir);
    expect(repo.hints.read('n2', 0, 100, unlimited)).toEqual([]);
    expect(repo.hints.stats('n2').entries).toBe(0);
  });

  it(`keeps at most hintTailBytesMax (${hintTailBytesMax / 1024 / 1024} MiB) of a peer's entries in memory, and still returns every entry`, async () => {
    const repo = open(newDataDir());
    const valueBytes = 2 * 1024 * 1024;
    const total = Math.ceil(hintTailBytesMax / valueBytes) + 4;
    const bigRecord = (i: number): Buffer =>
      encodeRecord({ version: { wallMs: wallBase + i, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.alloc(valueBytes, i % 251) });
    for (let i = 0; i < total; i++) {
      const reserved = repo.hints.reserve(['n2'], keyOf(i), bigRecord(i), wallBase + i);
      await repo.commitWrite(keyOf(i), bigRecord(i), true, reserved, { wallMs: wallBase + i, counter: 0 });
    }
    expect(repo.hints.stats('n2').entries).toBe(total);

    // The newest entries are in memory, within the byte bound; the older ones come from LMDB.
    let firstInMemory = total;
    while (firstInMemory > 0 && servedFromMemory(repo, 'n2', firstInMemory - 1, 1)) firstInMemory--;
    const entryBytes = repo.hints.read('n2', total - 1, 1, unlimited)[0]!.bytes;
    expect(firstInMemory).toBeGreaterThan(0);
    expect(firstInMemory).toBeLessThan(total);
    expect((total - firstInMemory) * entryBytes).toBeLessThanOrEqual(hintTailBytesMax);

    // Every entry, in order and intact, across the LMDB part and the memory part.
    const all = readAll(repo, 'n2', 0, 3);
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    all.forEach((e, i) => {
      expect(e.key.toString()).toBe(keyOf(i).toString());
      expect(e.record.equals(bigRecord(i)), `record of seq ${e.seq}`).toBe(true);
    });
  });

  it(`returns every entry, in order and without gaps, when more than hintTailEntriesMax (${hintTailEntriesMax}) are appended without removal`, async () => {
    const repo = open(newDataDir());
    const total = hintTailEntriesMax + 500;
    const batch = 1000;
    for (let first = 0; first < total; first += batch) await commitBatch(repo, first, Math.min(batch, total - first));
    expect(repo.hints.stats('n2').entries).toBe(total);

    // n2 is far behind: its oldest entries come from LMDB, its newest from memory.
    expect(servedFromMemory(repo, 'n2', 0)).toBe(false);
    expect(servedFromMemory(repo, 'n2', total - 3)).toBe(true);

    // Successive reads from 0 (odd page size, so pages straddle wherever the tail starts), with
    // more writes committed in the middle of the catch-up.
    const firstPage = repo.hints.read('n2', 0, 700, unlimited);
    expect(firstPage.length).toBe(700);
    const extra = 300;
    await commitBatch(repo, total, extra);
    const all = [...firstPage, ...readAll(repo, 'n2', firstPage[firstPage.length - 1]!.seq, 700)];
    expect(all.length).toBe(total + extra);
    expectWrites(all, 'n2', 0, total + extra);
    expect(servedFromMemory(repo, 'n2', total + extra - 3)).toBe(true);

    // n3 behaves like a delivery loop: read a page after the last delivered, remove it, go on.
    let delivered = 0;
    const seen: number[] = [];
    for (;;) {
      const page = repo.hints.read('n3', delivered, 1000, unlimited);
      if (page.length === 0) break;
      expectWrites(page, 'n3', delivered, page.length);
      seen.push(...page.map((e) => e.seq));
      delivered = page[page.length - 1]!.seq;
      repo.hints.remove(page);
    }
    expect(seen.length).toBe(total + extra);
    expect(repo.hints.stats('n3').entries).toBe(0);
    // After everything was delivered, new entries are served again (from memory).
    await commitBatch(repo, total + extra, 2);
    expectWrites(repo.hints.read('n3', 0, 100, unlimited), 'n3', total + extra, 2);
    expect(servedFromMemory(repo, 'n3', 0)).toBe(true);
  });

  it('honours maxEntries and maxBytes, from memory and from LMDB alike, and always returns at least one entry', async () => {
    const dataDir = newDataDir();
    let repo = open(dataDir);
    await commitBatch(repo, 0, 10);
    const all = repo.hints.read('n2', 0, 100, unlimited);
    expectWrites(all, 'n2', 0, 10);
    const bytes = (from: number, count: number) => all.slice(from, from + count).reduce((sum, e) => sum + e.bytes, 0);

    const cases: { afterSeq: number; maxEntries: number; maxBytes: number; seqs: number[] }[] = [
      { afterSeq: 0, maxEntries: 3, maxBytes: unlimited, seqs: [1, 2, 3] },
      { afterSeq: 4, maxEntries: 2, maxBytes: unlimited, seqs: [5, 6] },
      { afterSeq: 8, maxEntries: 5, maxBytes: unlimited, seqs: [9, 10] },
      { afterSeq: 10, maxEntries: 5, maxBytes: unlimited, seqs: [] },
      { afterSeq: 0, maxEntries: 1, maxBytes: unlimited, seqs: [1] },
      { afterSeq: 0, maxEntries: 100, maxBytes: 0, seqs: [1] },
      { afterSeq: 0, maxEntries: 100, maxBytes: 1, seqs: [1] },
      { afterSeq: 6, maxEntries: 100, maxBytes: 1, seqs: [7] },
      { afterSeq: 0, maxEntries: 100, maxBytes: bytes(0, 2), seqs: [1, 2] },
      { afterSeq: 0, maxEntries: 100, maxBytes: bytes(0, 2) - 1, seqs: [1] },
      { afterSeq: 3, maxEntries: 100, maxBytes: bytes(3, 4), seqs: [4, 5, 6, 7] },
      { afterSeq: 3, maxEntries: 3, maxBytes: bytes(3, 4), seqs: [4, 5, 6] },
      { afterSeq: 3, maxEntries: 100, maxBytes: bytes(3, 4) + all[7]!.bytes - 1, seqs: [4, 5, 6, 7] },
    ];
    const check = (source: string) => {
      for (const c of cases) {
        const got = repo.hints.read('n2', c.afterSeq, c.maxEntries, c.maxBytes);
        expect(got.map((e) => e.seq), `${source}: read(afterSeq ${c.afterSeq}, maxEntries ${c.maxEntries}, maxBytes ${c.maxBytes})`).toEqual(c.seqs);
      }
    };
    expect(servedFromMemory(repo, 'n2', 0)).toBe(true);
    check('memory');

    await close(repo);
    repo = open(dataDir);
    expect(servedFromMemory(repo, 'n2', 0)).toBe(false);
    check('LMDB');
  });

  it('addPeer gives a new peer a queue that reserve, commitWrite and read use like the others; an existing queue is kept', async () => {
    const repo = open(newDataDir());
    await commitBatch(repo, 0, 3);
    repo.hints.addPeer('n4');
    expect(repo.hints.peers()).toEqual(['n2', 'n3', 'n4']);
    expect(repo.hints.stats('n4')).toEqual({ entries: 0, bytes: 0, oldestEnqueuedAtMs: undefined, dropped: 0 });
    const seqs = await commitBatch(repo, 3, 2, ['n2', 'n3', 'n4']);
    expect(seqs.map((m) => [m.get('n2'), m.get('n4')])).toEqual([[4, 1], [5, 2]]);
    const n4 = repo.hints.read('n4', 0, 100, unlimited);
    expect(n4.map((e) => [e.seq, e.key.toString()])).toEqual([[1, keyOf(3).toString()], [2, keyOf(4).toString()]]);
    expect(repo.hints.stats('n4')).toMatchObject({ entries: 2, oldestEnqueuedAtMs: wallBase + 3 });

    // Idempotent: the queue, its counts and its in-memory tail stay as they were.
    const before = repo.hints.stats('n2');
    repo.hints.addPeer('n2');
    repo.hints.addPeer('n4');
    expect(repo.hints.stats('n2')).toEqual(before);
    expect(repo.hints.stats('n4').entries).toBe(2);
    expect(servedFromMemory(repo, 'n4', 0)).toBe(true);
    expect(repo.hints.peers()).toEqual(['n2', 'n3', 'n4']);

    // Ids are checked as the constructor checks them (and must survive the trip through a key prefix).
    for (const bad of ['', 'x'.repeat(256), 'a\x00b', 'n\u0100']) expect(() => repo.hints.addPeer(bad)).toThrow(/bad peer id/);
  });

  it('a reopened log finds the queue of a peer added before the close though the constructor was not told of it: entries, counts and next sequence', async () => {
    const dataDir = newDataDir();
    let repo = open(dataDir);
    repo.hints.addPeer('n0'); // sorts before the others: found ahead of them in the scan
    repo.hints.addPeer('n4');
    await commitBatch(repo, 0, 4, ['n0', 'n2', 'n3', 'n4']);
    await commitBatch(repo, 4, 3, ['n4']);
    repo.hints.remove(repo.hints.read('n4', 0, 2, unlimited)); // delivered: deleted by close's flush
    const stats = new Map(['n0', 'n4'].map((p) => [p, repo.hints.stats(p)]));
    await close(repo);

    repo = open(dataDir); // told of n2 and n3 only
    expect(repo.hints.peers()).toEqual(['n2', 'n3', 'n0', 'n4']);
    expect(repo.hints.stats('n4')).toEqual(stats.get('n4'));
    expect(repo.hints.stats('n4')).toMatchObject({ entries: 5, oldestEnqueuedAtMs: wallBase + 2 });
    expect(repo.hints.stats('n0')).toEqual(stats.get('n0'));
    expectWrites(repo.hints.read('n4', 0, 100, unlimited), 'n4', 2, 5);
    expectWrites(repo.hints.read('n0', 0, 100, unlimited), 'n0', 0, 4);
    for (const peer of peers) expectWrites(repo.hints.read(peer, 0, 100, unlimited), peer, 0, 4);
    // Sequences go on after the newest entry found.
    const next = await commitBatch(repo, 7, 1, ['n0', 'n2', 'n4']);
    expect(Object.fromEntries(next[0]!)).toEqual({ n0: 5, n2: 5, n4: 8 });
    expect(repo.hints.oldestEnqueuedAtMs()).toBe(wallBase);

    // Removed, it stays gone after the next reopen.
    expect(await repo.hints.removePeer('n0')).toBe(5);
    await close(repo);
    repo = open(dataDir);
    expect(repo.hints.peers()).toEqual(['n2', 'n3', 'n4']);
  });
});

/**
 * A write's entries are reserved (and readable by the delivery loops) before the transaction that
 * writes them, so the transaction can fail after a loop has read, even delivered, them; and a
 * delivery can be acknowledged before the entry is written. Driven on a HintLog over a real LMDB
 * database, with transactions really aborted (lmdb's ABORT).
 */
describe('HintLog entries reserved ahead of their transaction', () => {
  let env: RootDatabase | undefined;
  let db: Database<Buffer, Buffer> | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  function openLog(): HintLog {
    env = openLmdb({ path: join(newDataDir(), 'hints.mdb'), maxDbs: 2 });
    db = env.openDB<Buffer, Buffer>({ name: 'hints', encoding: 'binary', keyEncoding: 'binary' });
    return new HintLog(db, ['n2']);
  }

  /** Writes reserved entries in one transaction that commits, or aborts (then discards them). */
  function write(log: HintLog, reserved: ReservedEntries, outcome: 'commit' | 'abort'): void {
    let drained = noRemovals;
    env!.transactionSync(() => {
      log.writeReservedInTransaction(reserved);
      drained = log.drainRemovalsInTransaction();
      return outcome === 'abort' ? ABORT : undefined;
    });
    if (outcome === 'abort') {
      // What Repository does when a transaction fails.
      log.discardReserved(reserved);
      log.requeueRemovals(drained);
    }
  }

  const reserve = (log: HintLog, i: number) => log.reserve(['n2'], keyOf(i), recordOf(i), wallBase);
  const storedEntries = () => [...db!.getKeys({})].length;

  it('counts a failed entry once even if it was read and delivered before the failure, and never hands it out again', () => {
    const log = openLog();
    write(log, reserve(log, 0), 'commit'); // seq 1
    const failing = reserve(log, 1); // seq 2
    // Readable before its transaction: the delivery loop can send it while the commit runs.
    const early = log.read('n2', 0, 10, unlimited);
    expect(early.map((e) => e.seq)).toEqual([1, 2]);
    log.remove(early); // the peer acknowledged both
    write(log, failing, 'abort');
    expect(log.stats('n2')).toMatchObject({ entries: 0, bytes: 0 });
    write(log, reserve(log, 2), 'commit'); // seq 3
    expect(log.read('n2', 0, 10, unlimited).map((e) => e.seq)).toEqual([3]);
    expect(log.stats('n2').entries).toBe(1);
    expect(storedEntries()).toBe(1);
  });

  it('skips a failed entry nobody read: later entries are delivered and counted as usual', () => {
    const log = openLog();
    write(log, reserve(log, 0), 'commit'); // seq 1
    write(log, reserve(log, 1), 'abort'); // seq 2, never stored
    write(log, reserve(log, 2), 'commit'); // seq 3
    expect(log.stats('n2').entries).toBe(2);
    const batch = log.read('n2', 0, 10, unlimited);
    expect(batch.map((e) => e.seq)).toEqual([1, 3]);
    expect(batch.map((e) => e.key.toString())).toEqual([keyOf(0).toString(), keyOf(2).toString()]);
    log.remove(batch);
    expect(log.stats('n2')).toMatchObject({ entries: 0, bytes: 0, dropped: 0 });
    write(log, reserve(log, 3), 'commit'); // seq 4
    expect(log.read('n2', 3, 10, unlimited).map((e) => e.seq)).toEqual([4]);
    expect(log.stats('n2').entries).toBe(1);
    expect(storedEntries()).toBe(1);
  });

  it('deletes an entry delivered before it was written only once it is written, so it is not left behind in LMDB', () => {
    const log = openLog();
    const reserved = reserve(log, 0); // seq 1
    log.remove(log.read('n2', 0, 10, unlimited)); // acknowledged before its transaction ran
    // A transaction that does not write it (another peer's batch, a timer) must not delete it yet...
    env!.transactionSync(() => log.drainRemovalsInTransaction());
    // ...else this write would leave an entry in LMDB that nothing in memory accounts for.
    write(log, reserved, 'commit');
    expect(storedEntries()).toBe(0);
    expect(log.stats('n2')).toMatchObject({ entries: 0, bytes: 0 });
  });
});

/**
 * Membership changes (docs/membership.md §7.2): queues added and removed while the log runs, on a
 * HintLog over a real LMDB database.
 */
describe('HintLog.addPeer and removePeer', () => {
  let env: RootDatabase | undefined;
  let db: Database<Buffer, Buffer> | undefined;
  afterEach(async () => {
    vi.restoreAllMocks();
    await env?.close();
    env = undefined;
  });

  function openLog(syncCommits = false): HintLog {
    env = openLmdb({ path: join(newDataDir(), 'hints.mdb'), maxDbs: 2 });
    db = env.openDB<Buffer, Buffer>({ name: 'hints', encoding: 'binary', keyEncoding: 'binary' });
    return new HintLog(db, ['n2', 'n3'], systemClock, syncCommits);
  }

  /** Reserves and commits `count` writes for `to`, each enqueued at `atMs`, in one transaction. */
  function append(log: HintLog, to: readonly string[], first: number, count: number, atMs: number): ReservedEntries[] {
    const all = Array.from({ length: count }, (_, j) => log.reserve(to, keyOf(first + j), recordOf(first + j), atMs));
    env!.transactionSync(() => all.forEach((r) => log.writeReservedInTransaction(r)));
    return all;
  }

  const keysOf = (peer: string) => [...db!.getKeys({})].filter((k) => k.subarray(0, peer.length + 1).equals(Buffer.from(`${peer}\x00`, 'latin1')));

  for (const syncCommits of [false, true]) {
    it(`removePeer deletes a queue longer than one transaction (${hintRemovalBatchEntries} entries), and nothing else${syncCommits ? ' (commits on this thread)' : ''}`, async () => {
      const log = openLog(syncCommits);
      const total = 2 * hintRemovalBatchEntries + 500;
      append(log, ['n3'], 0, total, wallBase); // n3 holds the oldest entries
      append(log, ['n2', 'n3'], total, 3, wallBase + 10);
      expect(log.oldestEnqueuedAtMs()).toBe(wallBase);
      const transactions = vi.spyOn(db!, syncCommits ? 'transactionSync' : 'transaction');

      expect(await log.removePeer('n3')).toBe(total + 3);
      expect(transactions).toHaveBeenCalledTimes(3); // 1,000 + 1,000 + 503
      expect(keysOf('n3')).toEqual([]);
      expect(keysOf('n2').length).toBe(3);
      expect(log.peers()).toEqual(['n2']);
      expect(log.oldestEnqueuedAtMs()).toBe(wallBase + 10);
      expect(() => log.stats('n3')).toThrow(/unknown peer "n3"/);
      expect(() => log.reserve(['n2', 'n3'], keyOf(0), recordOf(0), wallBase)).toThrow(/unknown peer/);
      expect(log.stats('n2').entries).toBe(3); // the failed reserve left n2 as it was
      await expect(log.removePeer('n3')).rejects.toThrow(/unknown peer/);
      // A reopen finds nothing of n3.
      expect(new HintLog(db!, ['n2']).peers()).toEqual(['n2']);
    });
  }

  it('refuses addPeer for a peer still being deleted, and gives it an empty queue afterwards', async () => {
    const log = openLog();
    append(log, ['n3'], 0, hintRemovalBatchEntries + 1, wallBase);
    const removal = log.removePeer('n3');
    expect(() => log.addPeer('n3')).toThrow(/still being removed/);
    expect(await removal).toBe(hintRemovalBatchEntries + 1);
    log.addPeer('n3');
    expect(log.stats('n3')).toMatchObject({ entries: 0, bytes: 0 });
    expect(append(log, ['n3'], 0, 1, wallBase)[0]!.entries[0]!.seq).toBe(1);
  });

  it('does not write, for a removed peer, entries reserved before its removal: not before the peer is added again, nor after', async () => {
    const log = openLog();
    const early = log.reserve(['n2', 'n3'], keyOf(0), recordOf(0), wallBase); // its transaction is still to come
    const late = log.reserve(['n2', 'n3'], keyOf(1), recordOf(1), wallBase);
    const failing = log.reserve(['n2', 'n3'], keyOf(2), recordOf(2), wallBase);
    const removal = log.removePeer('n3');
    env!.transactionSync(() => log.writeReservedInTransaction(early)); // commits, for n2 alone
    expect(await removal).toBe(0);
    log.addPeer('n3');
    const fresh = append(log, ['n3'], 10, 2, wallBase + 1); // the new queue's seq 1 and 2
    env!.transactionSync(() => log.writeReservedInTransaction(late));
    log.discardReserved(failing);

    expect(keysOf('n3').length).toBe(2);
    expect(log.stats('n3')).toMatchObject({ entries: 2, oldestEnqueuedAtMs: wallBase + 1 });
    expect(log.read('n3', 0, 10, unlimited).map((e) => [e.seq, e.key.toString()])).toEqual(fresh.map((r, j) => [j + 1, keyOf(10 + j).toString()]));
    expect(log.read('n2', 0, 10, unlimited).map((e) => e.seq)).toEqual([1, 2]);
    expect(log.stats('n2').entries).toBe(2);
  });

  it('drops the removed peer\'s delivered entries from the pending deletes: flushRemovals still works, and a queue added again keeps its entries', async () => {
    const log = openLog();
    append(log, ['n2', 'n3'], 0, 6, wallBase);
    log.remove(log.read('n2', 0, 2, unlimited)); // delivered, deleted by the next drain
    log.remove(log.read('n3', 0, 3, unlimited));
    // A drain whose transaction fails after the removal started requeues what it took.
    let drained = noRemovals;
    env!.transactionSync(() => {
      log.remove(log.read('n3', 3, 1, unlimited));
      drained = log.drainRemovalsInTransaction();
      return ABORT;
    });
    expect(await log.removePeer('n3')).toBe(6);
    log.requeueRemovals(drained);
    log.addPeer('n3');
    append(log, ['n3'], 10, 4, wallBase + 1); // seq 1..4 again, under the same prefix
    await log.flushRemovals();

    expect(keysOf('n3').length).toBe(4);
    expect(log.stats('n3').entries).toBe(4);
    expect(log.read('n3', 0, 10, unlimited).map((e) => e.key.toString())).toEqual([10, 11, 12, 13].map((i) => keyOf(i).toString()));
    expect(keysOf('n2').length).toBe(4); // n2's delivered entries were deleted
    expect(log.stats('n2').entries).toBe(4);
  });

  it('keeps a queue of what is left when a removal transaction fails, so a retry deletes the rest', async () => {
    const log = openLog(true);
    const total = 2 * hintRemovalBatchEntries + 10;
    append(log, ['n3'], 0, total, wallBase);
    const real = db!.transactionSync.bind(db!);
    // The second transaction fails (a full disk, say); the first committed.
    vi.spyOn(db!, 'transactionSync')
      .mockImplementationOnce(real)
      .mockImplementationOnce(() => {
        throw new Error('injected: MDB_MAP_FULL');
      });
    await expect(log.removePeer('n3')).rejects.toThrow(/injected/);
    vi.restoreAllMocks();
    const left = total - hintRemovalBatchEntries;
    expect(log.peers()).toEqual(['n2', 'n3']);
    expect(log.stats('n3')).toMatchObject({ entries: left, oldestEnqueuedAtMs: wallBase });
    expect(log.read('n3', 0, 1, unlimited)[0]!.seq).toBe(hintRemovalBatchEntries + 1);
    expect(await log.removePeer('n3')).toBe(left);
    expect(keysOf('n3')).toEqual([]);
  });

  it('refuses at open a log key that names no peer', () => {
    openLog();
    db!.putSync(Buffer.from('no-separator'), Buffer.alloc(8));
    expect(() => new HintLog(db!, ['n2'])).toThrow(/malformed key/);
  });
});
