import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupStatus, KvClient } from '../../src/client/index.js';
import { decodeRecord, isTombstoneRecord } from '../../src/storage/record-codec.js';
import { Repository } from '../../src/storage/repository.js';
import { backupManifestName } from '../../src/replication/backups.js';
import { NodeProcess } from '../helpers/node-process.js';
import { collectKeys, describeCli, inChunks, runKvstore, SingleNode } from '../helpers/single-node.js';

const keyCount = 2000;
const writeChunk = 250;
/** Backup calls sent at once, and how many times. */
const concurrentBackups = 6;
const concurrentBackupRounds = 3;

function keyOf(i: number): string {
  return `bk/${String(i).padStart(5, '0')}`;
}

/** A value that identifies its key and includes binary bytes. */
function valueOf(i: number, generation = 'g1'): Buffer {
  return Buffer.concat([Buffer.from(`${generation}:${i}:`), Buffer.from([0x00, 0xff, i & 0xff])]);
}

describe('Backup and restore of one node', () => {
  let single: SingleNode;
  let client: KvClient;
  /** The state at backup time: key -> value; absent keys were deleted. */
  const model = new Map<string, Buffer>();
  const deletedKeys = new Set<string>();
  let backup: BackupStatus;

  beforeAll(async () => {
    single = await SingleNode.start('bk1');
    client = single.client({ deadlineMs: 20_000 });
    const indexes = Array.from({ length: keyCount }, (_, i) => i);
    await inChunks(indexes, writeChunk, (i) => client.put(keyOf(i), valueOf(i)));
    for (const i of indexes) model.set(keyOf(i), valueOf(i));
    // Overwrite some, delete some (every 5th): the copy must hold the newest value and the tombstones.
    const overwritten = indexes.filter((i) => i % 11 === 0);
    await inChunks(overwritten, writeChunk, (i) => client.put(keyOf(i), valueOf(i, 'g2')));
    for (const i of overwritten) model.set(keyOf(i), valueOf(i, 'g2'));
    const deleted = indexes.filter((i) => i % 5 === 2);
    await inChunks(deleted, writeChunk, async (i) => expect(await client.delete(keyOf(i))).toBe(true));
    for (const i of deleted) {
      model.delete(keyOf(i));
      deletedKeys.add(keyOf(i));
    }
    backup = await client.backup({ deadlineMs: 30_000 });
  }, 60_000);

  afterAll(async () => {
    await single?.close();
  });

  it('answers the path, the node id and the live key count', () => {
    expect(backup.nodeId).toBe('bk1');
    expect(backup.keyCount).toBe(model.size);
    expect(model.size).toBe(keyCount - deletedKeys.size);
    expect(backup.bytes).toBeGreaterThan(0);
    expect(statSync(backup.path).isDirectory()).toBe(true);
    // `bytes` is the size of the copy: at least its LMDB file.
    const environmentBytes = statSync(join(backup.path, 'kvstore.mdb')).size;
    expect(environmentBytes).toBeGreaterThan(0);
    expect(backup.bytes).toBeGreaterThanOrEqual(environmentBytes);
  });

  it('is an LMDB environment that opens read-only and holds every live key, its value, and a tombstone per deleted key', async () => {
    const copy = Repository.openReadOnly(backup.path);
    try {
      expect(copy.nodeId).toBe('bk1');
      const liveInCopy = new Map<string, Buffer>();
      const tombstonesInCopy = new Set<string>();
      for (const { key, value } of copy.records.getRange({})) {
        const name = Buffer.from(key).toString('utf8');
        const record = decodeRecord(value);
        expect(record.tombstone).toBe(isTombstoneRecord(value));
        expect(record.version.nodeId).toBe('bk1');
        expect(record.version.wallMs).toBeGreaterThan(0);
        if (record.tombstone) {
          expect(record.value.length).toBe(0);
          tombstonesInCopy.add(name);
        } else {
          liveInCopy.set(name, Buffer.from(record.value));
        }
      }
      expect(liveInCopy.size).toBe(model.size);
      for (const [key, value] of model) {
        expect(liveInCopy.get(key)?.toString('hex'), key).toBe(value.toString('hex'));
      }
      expect([...tombstonesInCopy].sort()).toEqual([...deletedKeys].sort());
      expect(liveInCopy.size).toBe(backup.keyCount);
    } finally {
      await copy.close();
    }
  });

  it('runs one Backup at a time: of concurrent ones one succeeds and the rest answer RESOURCE_EXHAUSTED naming it, while the node keeps serving', async () => {
    // A backup copies the whole data file; several at once only multiply the disk and memory
    // (admin-jobs.ts). Repeated a few times, as the overlap is a race.
    const duringKeys = Array.from({ length: 100 }, (_, i) => `during/${i}`);
    const refusals: string[] = [];
    const backups: BackupStatus[] = [];
    for (let round = 0; round < concurrentBackupRounds; round++) {
      const writes = Promise.all(duringKeys.map((key) => client.put(key, `x${round}`)));
      const settled = await Promise.allSettled(Array.from({ length: concurrentBackups }, () => client.backup({ deadlineMs: 30_000 })));
      await writes;
      const succeeded = settled.filter((r) => r.status === 'fulfilled');
      expect(succeeded.length, `round ${round}: at least one backup runs`).toBeGreaterThanOrEqual(1);
      for (const r of settled) {
        if (r.status === 'fulfilled') backups.push(r.value);
        else refusals.push(String((r.reason as Error).message));
      }
    }
    await inChunks(duringKeys, 100, (key) => client.delete(key));

    // Six sent at once on one connection arrive well within one backup's time: most are refused.
    expect(refusals.length).toBeGreaterThan(0);
    for (const message of refusals) expect(message).toMatch(/RESOURCE_EXHAUSTED.*Backup is already running on bk1.*one at a time/);
    expect(new Set(backups.map((b) => b.path)).size).toBe(backups.length);
    for (const b of backups) {
      expect(b.nodeId).toBe('bk1');
      // Each copy is consistent: the backed-up keys, plus some of the concurrent writes.
      expect(b.keyCount).toBeGreaterThanOrEqual(model.size);
      expect(b.keyCount).toBeLessThanOrEqual(model.size + duringKeys.length);
    }
    // Once it finished, the next one runs.
    const after = await client.backup({ deadlineMs: 30_000 });
    expect(existsSync(after.path)).toBe(true);
  });

  it('restore is refused while the node is running, and the node keeps its data', async () => {
    const result = await runKvstore(['restore', '--from', backup.path, '--config', single.node.configPath]);
    expect(result.timedOut, describeCli(result)).toBe(false);
    expect(result.code, describeCli(result)).not.toBe(0);
    expect(result.code, describeCli(result)).not.toBeNull();
    expect(result.stderr).toMatch(/in use|stop the node/);
    expect(single.node.running).toBe(true);
    expect(await client.getString(keyOf(1))).toBe(valueOf(1).toString());
    expect((await client.status()).keyCount).toBe(model.size);
  });

  it('restore is refused for a backup of another node id, and for a directory that is not a backup', async () => {
    const other = NodeProcess.create(single.dir, 'someone-else');
    const wrongOwner = await runKvstore(['restore', '--from', backup.path, '--config', other.configPath]);
    expect(wrongOwner.code, describeCli(wrongOwner)).not.toBe(0);
    expect(wrongOwner.timedOut).toBe(false);
    expect(wrongOwner.stderr).toContain('bk1');
    expect(existsSync(join(other.dataDir, 'kvstore.mdb'))).toBe(false);

    const notBackup = await runKvstore(['restore', '--from', single.dir, '--config', other.configPath]);
    expect(notBackup.code, describeCli(notBackup)).not.toBe(0);
    expect(notBackup.timedOut).toBe(false);
    expect(notBackup.stderr).toContain('not a kvstore backup');
  });

  it('restore on the stopped node brings back exactly the backed-up state', async () => {
    // Changes after the backup: new keys, overwrites, deletes, and a deleted key written again.
    const liveKeys = [...model.keys()];
    await inChunks(
      Array.from({ length: 300 }, (_, i) => i),
      writeChunk,
      (i) => client.put(`after/${i}`, 'later'),
    );
    await inChunks(liveKeys.slice(0, 200), writeChunk, (key) => client.put(key, 'overwritten later'));
    await inChunks(liveKeys.slice(200, 400), writeChunk, (key) => client.delete(key));
    const revived = [...deletedKeys].slice(0, 50);
    await inChunks(revived, writeChunk, (key) => client.put(key, 'revived later'));
    expect((await client.status()).keyCount).toBe(model.size + 300 - 200 + 50);

    single.closeClients();
    expect(await single.node.stop()).toBe(0);
    const result = await runKvstore(['restore', '--from', backup.path, '--config', single.node.configPath]);
    expect(result.code, describeCli(result)).toBe(0);
    expect(result.timedOut).toBe(false);
    // The data it replaced is kept beside it; the staged copy was swapped in, not left behind.
    expect(readdirSync(single.node.dataDir).some((name) => name.startsWith('kvstore.mdb.before-restore-'))).toBe(true);
    expect(readdirSync(single.node.dataDir)).not.toContain('kvstore.mdb.restoring');
    expect(result.stderr).toMatch(/restoring \[#+\] .* MiB/); // the progress line (stderr is not a terminal: printed as lines)
    expect(result.stderr).toMatch(/copied [\d.]+ MiB/);

    await single.node.start();
    client = single.client({ deadlineMs: 20_000 });
    const listed = (await collectKeys(client.listKeys())).map(String);
    expect(listed).toEqual([...model.keys()].sort());
    const status = await client.status();
    expect(status.keyCount).toBe(model.size);
    expect(status.nodeId).toBe('bk1');
    const mismatches: string[] = [];
    await inChunks([...model.keys(), ...deletedKeys], writeChunk, async (key) => {
      const got = await client.get(key);
      const want = model.get(key);
      if (got?.toString('hex') !== want?.toString('hex')) mismatches.push(`${key}: ${got?.toString()} != ${want?.toString()}`);
    });
    expect(mismatches).toEqual([]);
    expect(await client.get('after/0')).toBeUndefined();

    // The restored node takes writes, and they win over the restored versions.
    const first = liveKeys[0]!;
    expect((await client.put(first, 'after restore')).oldValue?.toString('hex')).toBe(model.get(first)!.toString('hex'));
    expect(await client.getString(first)).toBe('after restore');
  });

  it('a node restored from a backup older than the tombstone grace refuses to start, saying why', async () => {
    single.closeClients();
    expect(await single.node.stop()).toBe(0);
    // The same backup, as if taken two days ago (the default grace is one day).
    const old = join(single.dir, 'old-backup');
    cpSync(backup.path, old, { recursive: true });
    const manifestPath = join(old, backupManifestName);
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { createdAtMs: number };
    writeFileSync(manifestPath, JSON.stringify({ ...manifest, createdAtMs: Date.now() - 2 * 86_400_000 }));
    const restored = await runKvstore(['restore', '--from', old, '--config', single.node.configPath]);
    expect(restored.code, describeCli(restored)).toBe(0);
    const refused = await runKvstore(['--config', single.node.configPath]);
    expect(refused.code, describeCli(refused)).toBe(3);
    expect(refused.stderr).toMatch(/restored from a backup taken \d+ s ago, longer ago than tombstones.graceSeconds/);
    // A fresh backup restores and starts.
    const fresh = await runKvstore(['restore', '--from', backup.path, '--config', single.node.configPath]);
    expect(fresh.code, describeCli(fresh)).toBe(0);
    await single.node.start();
    client = single.client({ deadlineMs: 20_000 });
    expect((await client.status()).nodeId).toBe('bk1');
  });
});

describe('Backup retention (backupKeep)', () => {
  let single: SingleNode | undefined;
  afterAll(async () => {
    await single?.close();
  });

  it('keeps the newest backupKeep backups of the node and leaves everything else in backupDir alone', async () => {
    single = await SingleNode.start('keep1', { backupKeep: 2 });
    const client = single.client({ deadlineMs: 20_000 });
    const backupDir = `${single.node.dataDir}-backups`;
    // Not backups of this node: another node's (with its manifest) and a directory without one.
    const foreign = join(backupDir, 'keep2-2026-01-01T00-00-00-000Z-abcdef');
    const stray = join(backupDir, 'keep1-operator-notes');
    mkdirSync(foreign, { recursive: true });
    writeFileSync(join(foreign, backupManifestName), JSON.stringify({ nodeId: 'keep2', createdAtMs: 1 }));
    mkdirSync(stray, { recursive: true });

    const taken: string[] = [];
    for (let i = 0; i < 4; i++) {
      await client.put(`k${i}`, `v${i}`);
      taken.push((await client.backup({ deadlineMs: 30_000 })).path);
    }
    const left = readdirSync(backupDir).map((name) => join(backupDir, name)).sort();
    expect(left).toEqual([foreign, stray, taken[2]!, taken[3]!].sort());
    // The newest one holds all four writes.
    const copy = Repository.openReadOnly(taken[3]!);
    try {
      expect([...copy.records.getKeys({})].length).toBe(4);
    } finally {
      await copy.close();
    }
  });
});
