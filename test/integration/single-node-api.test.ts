import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConsistencyLevel, KvClient } from '../../src/client/index.js';
import { Repository } from '../../src/storage/repository.js';
import { collectKeys, hexKeys, SingleNode } from '../helpers/single-node.js';

/** Every public RPC through the SDK against one real node process (real gRPC, real LMDB). */
describe('single node: the public API through the SDK', () => {
  let single: SingleNode;
  let client: KvClient;

  beforeAll(async () => {
    single = await SingleNode.start('api1');
    client = single.client();
  });

  afterAll(async () => {
    await single?.close();
  });

  it('put answers found=false first, then the value it replaced', async () => {
    expect(await client.put('put/a', 'one')).toEqual({ found: false });
    const second = await client.put('put/a', 'two');
    expect(second.found).toBe(true);
    expect(second.oldValue?.toString()).toBe('one');
    const third = await client.put('put/a', 'three');
    expect(third.found).toBe(true);
    expect(third.oldValue?.toString()).toBe('two');
    expect(await client.getString('put/a')).toBe('three');
  });

  it('get answers the value, or undefined for a key never written', async () => {
    await client.put('get/present', 'here');
    expect(await client.getString('get/present')).toBe('here');
    expect(await client.get('get/absent')).toBeUndefined();
    expect(await client.getString('get/absent')).toBeUndefined();
  });

  it('delete answers whether a value existed; the key then reads as absent, and a put after it starts fresh', async () => {
    await client.put('del/a', 'doomed');
    expect(await client.delete('del/a')).toBe(true);
    expect(await client.get('del/a')).toBeUndefined();
    // Deleting again (a tombstone is there) and deleting a key never written are not errors.
    expect(await client.delete('del/a')).toBe(false);
    expect(await client.delete('del/never-written')).toBe(false);
    // The tombstone counts as absent for the put's old value too.
    expect(await client.put('del/a', 'reborn')).toEqual({ found: false });
    expect(await client.getString('del/a')).toBe('reborn');
    const keys = await collectKeys(client.listKeys({ prefix: 'del/' }));
    expect(keys.map(String)).toEqual(['del/a']);
  });

  it('keys and values may be strings or Uint8Array, with any bytes, and a value may be empty', async () => {
    const binaryKey = Uint8Array.from([0x00, 0xff, 0x00, 0x01, 0xfe]);
    const binaryValue = Uint8Array.from([0xff, 0x00, 0x00, 0xff, 0x80, 0x7f, 0x00]);
    expect(await client.put(binaryKey, binaryValue)).toEqual({ found: false });
    const read = await client.get(binaryKey);
    expect(read).toBeInstanceOf(Buffer);
    expect(Buffer.compare(read!, binaryValue)).toBe(0);

    // A Uint8Array that is a view into a larger buffer sends only its own bytes.
    const backing = Uint8Array.from([0xaa, 0x01, 0x02, 0x03, 0xbb]);
    await client.put(backing.subarray(1, 4), backing.subarray(0, 2));
    expect([...(await client.get(Uint8Array.from([1, 2, 3])))!]).toEqual([0xaa, 0x01]);

    // A string key is UTF-8: the same bytes as a Buffer address the same key.
    await client.put('bin/héllo ✓', 'ünïcode ✓');
    expect(await client.getString(Buffer.from('bin/héllo ✓', 'utf8'))).toBe('ünïcode ✓');

    // Single-byte keys at both ends of the byte range.
    await client.put(Uint8Array.from([0x00]), 'zero');
    await client.put(Uint8Array.from([0xff]), 'ff');
    expect(await client.getString(Uint8Array.from([0x00]))).toBe('zero');
    expect(await client.getString(Uint8Array.from([0xff]))).toBe('ff');

    // An empty value is a value: found, zero bytes, distinct from absent.
    expect(await client.put('bin/empty', '')).toEqual({ found: false });
    const empty = await client.get('bin/empty');
    expect(empty).toBeDefined();
    expect(empty!.length).toBe(0);
    const overEmpty = await client.put('bin/empty', new Uint8Array(0));
    expect(overEmpty.found).toBe(true);
    expect(overEmpty.oldValue?.length).toBe(0);
    expect(await client.delete('bin/empty')).toBe(true);
    expect(await client.get('bin/empty')).toBeUndefined();

    // A larger binary value covering every byte value round-trips exactly.
    const big = Buffer.alloc(64 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    await client.put('bin/big', big);
    expect((await client.get('bin/big'))!.equals(big)).toBe(true);
  });

  it.each(['one', 'quorum', 'all'] as const)('accepts consistency %s per call on put, get and delete', async (level: ConsistencyLevel) => {
    const key = `cons/${level}`;
    expect(await client.put(key, 'v1', { consistency: level })).toEqual({ found: false });
    expect(await client.getString(key, { consistency: level })).toBe('v1');
    const replaced = await client.put(key, 'v2', { consistency: level });
    expect(replaced.oldValue?.toString()).toBe('v1');
    expect(await client.delete(key, { consistency: level })).toBe(true);
    expect(await client.get(key, { consistency: level })).toBeUndefined();
  });

  it('accepts a client-wide default consistency', async () => {
    for (const level of ['one', 'quorum', 'all'] as const) {
      const scoped = single.client({ consistency: level });
      await scoped.put(`cons/default/${level}`, level);
      expect(await scoped.getString(`cons/default/${level}`)).toBe(level);
    }
  });

  it('status describes the node: id, counts (tombstones in recordCount only), one member that is itself', async () => {
    const live = await collectKeys(client.listKeys());
    const status = await client.status();
    expect(status.nodeId).toBe('api1');
    expect(status.keyCount).toBe(live.length);
    // Deletes above left tombstones (del/never-written, cons/*, bin/empty...).
    expect(status.recordCount).toBeGreaterThan(status.keyCount);
    expect(status.replicationFactor).toBe(1);
    expect(status.listen).toBe(single.node.listen);
    expect(status.dataDir).toBe(single.node.dataDir);
    expect(status.version).not.toBe('');
    expect(status.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(status.members).toHaveLength(1);
    expect(status.members[0]).toMatchObject({ nodeId: 'api1', self: true, reachable: true, backlogEntries: 0, backlogBytes: 0, droppedEntries: 0 });

    // keyCount follows writes and deletes.
    await client.put('status/new', 'x');
    expect((await client.status()).keyCount).toBe(live.length + 1);
    await client.delete('status/new');
    const after = await client.status();
    expect(after.keyCount).toBe(live.length);
    expect(after.recordCount).toBe(status.recordCount + 1);
  });

  it('listKeys lists the live keys in ascending byte order', async () => {
    const keys = await collectKeys(client.listKeys());
    const sorted = [...keys].sort(Buffer.compare);
    expect(hexKeys(keys)).toEqual(hexKeys(sorted));
    expect(keys.map((k) => k.toString('hex'))).toContain('00');
    expect(keys[0]!.toString('hex')).toBe('00');
    expect(keys[keys.length - 1]!.toString('hex')).toBe('ff');
    expect(keys.map(String)).not.toContain('bin/empty');
  });

  it('backup answers where the copy is and what it holds', async () => {
    const live = await collectKeys(client.listKeys());
    const before = Date.now();
    const backup = await client.backup();
    expect(backup.nodeId).toBe('api1');
    expect(backup.keyCount).toBe(live.length);
    expect(backup.bytes).toBeGreaterThan(0);
    expect(backup.nodes).toEqual([]);
    expect(backup.error).toBe('');
    expect(backup.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(statSync(backup.path).isDirectory()).toBe(true);
    // Default backupDir is <dataDir>-backups: beside the data dir, not inside it.
    expect(dirname(backup.path)).toBe(`${single.node.dataDir}-backups`);
    expect(existsSync(join(backup.path, 'kvstore.mdb'))).toBe(true);

    const copy = Repository.openReadOnly(backup.path);
    try {
      expect(copy.nodeId).toBe('api1');
      const copied = [...copy.records.getKeys({})].map((k) => Buffer.from(k));
      // Tombstones are copied too, so the copy holds at least the live keys.
      expect(copied.length).toBeGreaterThanOrEqual(live.length);
      const copiedHex = new Set(hexKeys(copied));
      for (const key of hexKeys(live)) expect(copiedHex.has(key), key).toBe(true);
    } finally {
      await copy.close();
    }

    // A second backup gets its own directory; all_nodes on a single node lists just this one.
    const all = await client.backup({ allNodes: true });
    expect(all.path).not.toBe(backup.path);
    expect(all.nodes).toHaveLength(1);
    expect(all.nodes[0]).toMatchObject({ nodeId: 'api1', path: all.path, keyCount: live.length, error: '' });
    expect(all.error).toBe('');
  });
});

/**
 * limits.maxValueBytes may be set up to 32 MiB, above gRPC's default 4 MiB receive limit: a value
 * the node accepts must also be readable through the SDK with its default options.
 */
describe('single node: values above 4 MiB when the node allows them', () => {
  let single: SingleNode;
  let client: KvClient;
  const mib = 1024 * 1024;

  beforeAll(async () => {
    single = await SingleNode.start('big1', { limits: { maxValueBytes: 8 * mib } });
    client = single.client({ deadlineMs: 30_000 });
  });

  afterAll(async () => {
    await single?.close();
  });

  it('puts, reads back and overwrites a 5 MiB value with the default client options', async () => {
    const first = Buffer.alloc(5 * mib, 0xa1);
    const second = Buffer.alloc(5 * mib, 0xb2);
    expect(await client.put('big', first)).toEqual({ found: false });
    // Both calls below answer the previous/current 5 MiB value.
    const read = await client.get('big');
    expect(read?.length).toBe(first.length);
    expect(read!.equals(first)).toBe(true);
    const replaced = await client.put('big', second);
    expect(replaced.found).toBe(true);
    expect(replaced.oldValue!.equals(first)).toBe(true);
    expect((await client.get('big'))!.equals(second)).toBe(true);
  });
});
