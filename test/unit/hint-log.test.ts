import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ABORT, type Database, type RootDatabase, open as openLmdb } from 'lmdb';
import { type HintEntry, HintLog, type ReservedEntries, hintTailBytesMax, hintTailEntriesMax, noRemovals } from '../../src/storage/hint-log.js';
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
async function commitBatch(repo: Repository, first: number, count: number): Promise<ReadonlyMap<string, number>[]> {
  const seqs = Array.from({ length: count }, () => new Map<string, number>());
  await Promise.all(
    Array.from({ length: count }, (_, j) => {
      const i = first + j;
      const reserved = repo.hints.reserve(peers, keyOf(i), recordOf(i), wallBase + i);
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
