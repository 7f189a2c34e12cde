import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DigestForest } from '../../src/cluster/digest-tree.js';
import { Ring } from '../../src/cluster/ring.js';
import { RequestDeadline } from '../../src/replication/deadline.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { recordHeader, Repository, syncCommitRecordsMax, UnstorableRecordError } from '../../src/storage/repository.js';
import { murmur3x86_32 } from '../../src/cluster/hash.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * The group commit on real LMDB: one bad job never fails or half-commits the others, and the
 * record counts and hash trees the node keeps in memory always equal a rebuild from LMDB.
 */

const ring = new Ring(['n1', 'n2', 'n3'].map((id) => ({ id, peer: '127.0.0.1:1' })));
let repos: Repository[] = [];
let dirs: string[] = [];

afterEach(async () => {
  for (const repo of repos) await repo.close().catch(() => undefined);
  repos = [];
  for (const dir of dirs) removeTempDir(dir);
  dirs = [];
});

function openWithForest(dataDir: string): { repo: Repository; forest: DigestForest } {
  const repo = Repository.open({ dataDir, nodeId: 'n1', peers: ['n2', 'n3'] });
  repos.push(repo);
  const forest = new DigestForest(ring);
  repo.observeRecords((key, keyHash, oldHeader, newHeader) => forest.apply(keyHash, key, oldHeader, newHeader));
  return { repo, forest };
}

let wall = 1_700_000_000_000;
function record(value: string, tombstone = false): Buffer {
  return encodeRecord({ version: { wallMs: wall++, counter: 0, nodeId: 'n2' }, tombstone, value: Buffer.from(value) });
}

function roots(forest: DigestForest): string[] {
  return Array.from({ length: forest.rangeCount }, (_, r) => forest.root(r).toString('hex'));
}

describe('Repository group commit isolation (real LMDB)', () => {
  it('a peer batch with an unstorable key fails alone; the writes sharing its transaction commit, and counts and trees match a rebuild', async () => {
    const dir = makeTempDir('kvstore-isolation-');
    dirs.push(dir);
    const dataDir = join(dir, 'data');
    const { repo, forest } = openWithForest(dataDir);
    // All queued in one event-loop turn: they share one transaction.
    const good1 = repo.applyRecords([{ key: Buffer.from('a'), record: record('1') }, { key: Buffer.from('b'), record: record('2') }]);
    const bad = repo.applyRecords([{ key: Buffer.from('c'), record: record('3') }, { key: Buffer.alloc(3000, 0x61), record: record('too long') }]);
    const good2 = repo.commitWrite(Buffer.from('d'), record('4'), true, undefined);
    const tomb = repo.applyRecords([{ key: Buffer.from('e'), record: record('', true) }]);
    const results = await Promise.allSettled([good1, bad, good2, tomb]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(UnstorableRecordError);
    // Nothing of the bad batch was stored, not even its good first record.
    expect(repo.getRecord(Buffer.from('c'))).toBeUndefined();
    expect(repo.recordCounts()).toEqual({ records: 4, live: 3 });
    const before = roots(forest);
    await repo.close();
    repos = repos.filter((r) => r !== repo);
    const rebuilt = openWithForest(dataDir);
    expect(rebuilt.repo.recordCounts()).toEqual({ records: 4, live: 3 });
    expect(roots(rebuilt.forest)).toEqual(before);
  });

  it('a malformed record is refused before it joins a transaction', async () => {
    const dir = makeTempDir('kvstore-isolation-');
    dirs.push(dir);
    const { repo } = openWithForest(join(dir, 'data'));
    await expect(repo.applyRecords([{ key: Buffer.from('x'), record: Buffer.from([0xff, 1, 2]) }])).rejects.toBeInstanceOf(UnstorableRecordError);
    await expect(repo.applyRecords([{ key: Buffer.alloc(0), record: record('v') }])).rejects.toThrow(/empty key/);
    expect(repo.recordCounts()).toEqual({ records: 0, live: 0 });
  });

  it('counts and trees equal a rebuild after many interleaved batches, some failing', async () => {
    const dir = makeTempDir('kvstore-isolation-');
    dirs.push(dir);
    const dataDir = join(dir, 'data');
    const { repo, forest } = openWithForest(dataDir);
    const work: Promise<unknown>[] = [];
    for (let i = 0; i < 400; i++) {
      const key = Buffer.from(`k${i % 97}`);
      if (i % 13 === 0) work.push(repo.applyRecords([{ key, record: record(`v${i}`) }, { key: Buffer.alloc(2500, 0x62), record: record('bad') }]));
      else if (i % 5 === 0) work.push(repo.applyRecords([{ key, record: record('', true) }]));
      else work.push(repo.commitWrite(key, record(`v${i}`), true, undefined));
      if (i % 50 === 0) await Promise.allSettled(work);
    }
    await Promise.allSettled(work);
    const counts = repo.recordCounts();
    const before = roots(forest);
    await repo.close();
    repos = repos.filter((r) => r !== repo);
    const rebuilt = openWithForest(dataDir);
    expect(rebuilt.repo.recordCounts()).toEqual(counts);
    expect(roots(rebuilt.forest)).toEqual(before);
  });
});

describe('Repository.rebuildObserver: hash trees refilled in pages while commits go on (real LMDB)', () => {
  it('the new trees equal a full replay of what LMDB holds, whatever committed while they were filled', async () => {
    const dir = makeTempDir('kvstore-rebuild-');
    dirs.push(dir);
    const dataDir = join(dir, 'data');
    const { repo, forest: old } = openWithForest(dataDir);
    const keys = 6000;
    for (let i = 0; i < keys; i += 500) await repo.applyRecords(Array.from({ length: 500 }, (_, j) => ({ key: Buffer.from(`k${i + j}`), record: record(`v${i + j}`) })));
    const ring4 = new Ring(['n1', 'n2', 'n3', 'n4'].map((id) => ({ id, peer: '127.0.0.1:1' })));
    const next = new DigestForest(ring4);
    let swapped = false;
    const pages = 200; // 30 pages, with commits landing between them
    const rebuilt = repo.rebuildObserver((key, keyHash, oldHeader, newHeader) => next.apply(keyHash, key, oldHeader, newHeader), () => (swapped = true), pages);
    // Overwrites, deletes and new keys across the whole key space (behind and ahead of the
    // pages read), in many small transactions, until some time after the swap.
    const work: Promise<unknown>[] = [];
    let i = 0;
    while (!swapped || i < 3000) {
      const k = Buffer.from(`k${(i * 7919) % (keys + 500)}`);
      if (i % 4 === 0) work.push(repo.applyRecords([{ key: k, record: record('', true) }]));
      else work.push(repo.commitWrite(k, record(`w${i}`), true, undefined));
      if (i % 20 === 0) await new Promise((resolve) => setImmediate(resolve));
      i++;
      if (i > 200_000) throw new Error('the rebuild never swapped');
    }
    await rebuilt;
    await Promise.all(work);
    // Compared with full replays of what LMDB now holds, over each ring.
    const full = (r: Ring) => {
      const f = new DigestForest(r);
      repo.observeRecords((key, keyHash, oldHeader, newHeader) => f.apply(keyHash, key, oldHeader, newHeader));
      return f;
    };
    expect(swapped).toBe(true);
    expect(roots(next)).toEqual(roots(full(ring4)));
  });

  it('until the swap the old trees get every commit; a newer rebuild cancels an older one', async () => {
    const dir = makeTempDir('kvstore-rebuild-');
    dirs.push(dir);
    const { repo, forest: old } = openWithForest(join(dir, 'data'));
    for (let i = 0; i < 3000; i += 500) await repo.applyRecords(Array.from({ length: 500 }, (_, j) => ({ key: Buffer.from(`k${i + j}`), record: record(`v${i + j}`) })));
    const dropped = new DigestForest(ring);
    const first = repo.rebuildObserver((key, keyHash, oldHeader, newHeader) => dropped.apply(keyHash, key, oldHeader, newHeader), () => expect.unreachable('a cancelled rebuild swapped'), 100);
    first.catch(() => undefined);
    await repo.commitWrite(Buffer.from('k1'), record('during'), true, undefined);
    // The old trees saw it: they still answer until a rebuild swaps.
    const replay = new DigestForest(ring);
    for (const r of [...repo.recordsInHashInterval(0, 0xffffffff), ...repo.recordsInHashInterval(0xffffffff, 0)]) replay.apply(murmur3x86_32(r.key, 0), r.key, undefined, recordHeader(r.record));
    expect(roots(old)).toEqual(roots(replay));
    const second = new DigestForest(ring);
    await repo.rebuildObserver((key, keyHash, oldHeader, newHeader) => second.apply(keyHash, key, oldHeader, newHeader), () => undefined, 100);
    await expect(first).rejects.toThrow(/cancelled by a newer one/);
    expect(roots(second)).toEqual(roots(replay));
  });
});

describe('a commit that fails', () => {
  // Both of the repository's commit paths: a transaction of at most syncCommitRecordsMax records
  // commits on the main thread (transactionSync), a larger one on lmdb-js's write thread. On the
  // second, lmdb-js commits whatever an async transaction callback wrote before it threw: the
  // repository's body has to run in a child transaction there to be undone (repository.ts).
  for (const records of [1, syncCommitRecordsMax + 3]) {
    it(`changes nothing, fails every job in it, and leaves counts and trees equal to a rebuild (${records} records: the ${records <= syncCommitRecordsMax ? 'main-thread' : 'write-thread'} commit)`, async () => {
      const dir = makeTempDir('kvstore-isolation-');
      dirs.push(dir);
      const dataDir = join(dir, 'data');
      let failing = false;
      const repo = Repository.open({ dataDir, nodeId: 'n1', peers: ['n2', 'n3'], storageFaults: { failJob: () => false, failCommit: () => failing } });
      repos.push(repo);
      const forest = new DigestForest(ring);
      repo.observeRecords((key, keyHash, oldHeader, newHeader) => forest.apply(keyHash, key, oldHeader, newHeader));
      await repo.applyRecords([{ key: Buffer.from('kept'), record: record('before') }]);
      const rootsBefore = roots(forest);

      failing = true;
      const batch = Array.from({ length: records }, (_, i) => ({ key: Buffer.from(`k${i}`), record: record(`v${i}`) }));
      const outcomes = await Promise.allSettled([repo.applyRecords(batch), repo.commitWrite(Buffer.from('kept'), record('after'), true, undefined)]);
      failing = false;
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
      for (const { key } of batch) expect(repo.getRecord(key)).toBeUndefined();
      expect(repo.getRecord(Buffer.from('kept'))!.subarray(-6).toString()).toBe('before');
      expect(repo.recordCounts()).toEqual({ records: 1, live: 1 });
      expect(roots(forest)).toEqual(rootsBefore);

      await repo.close();
      repos = repos.filter((r) => r !== repo);
      const rebuilt = openWithForest(dataDir);
      expect(rebuilt.repo.recordCounts()).toEqual({ records: 1, live: 1 });
      for (const { key } of batch) expect(rebuilt.repo.getRecord(key)).toBeUndefined();
      expect(roots(rebuilt.forest)).toEqual(rootsBefore);
    });
  }
});

describe('version collisions', () => {
  it('two different records with one version are counted and reported, and the byte-wise larger wins wherever it arrives first', async () => {
    const dir = makeTempDir('kvstore-isolation-');
    dirs.push(dir);
    const version = { wallMs: 1_700_000_000_000, counter: 7, nodeId: 'n2' };
    const a = encodeRecord({ version, tombstone: false, value: Buffer.from('aaa') });
    const b = encodeRecord({ version, tombstone: false, value: Buffer.from('bbb') });
    const winners: string[] = [];
    for (const order of [[a, b], [b, a]]) {
      const { repo } = openWithForest(join(dir, `data-${winners.length}`));
      const seen: string[] = [];
      repo.onVersionCollision((c) => seen.push(`${c.stored.subarray(-3)}<-${c.received.subarray(-3)}`));
      for (const record of order) await repo.applyRecords([{ key: Buffer.from('k'), record }]);
      await repo.applyRecords([{ key: Buffer.from('k'), record: b }]); // the stored record again: no collision
      expect(repo.versionCollisions).toBe(1);
      expect(seen).toHaveLength(1);
      winners.push(repo.getRecord(Buffer.from('k'))!.subarray(-3).toString());
    }
    expect(winners).toEqual(['bbb', 'bbb']);
  });
});

describe('RequestDeadline', () => {
  it('leaves no unhandled rejection when the request was read after its deadline and its work fails later', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const controller = new AbortController();
      controller.abort(); // the client's deadline had passed before the node read the request
      const deadline = new RequestDeadline(controller.signal, 1_000);
      let failWork!: (err: Error) => void;
      const work = new Promise<void>((_, reject) => (failWork = reject));
      await expect(deadline.race(work, () => 'too late')).rejects.toThrow('too late');
      failWork(new Error('not enough replicas'));
      // Unhandled rejections are reported after the microtask queue drains.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
