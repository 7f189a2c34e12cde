import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { KvClient, Status } from '../../src/client/index.js';
import { NodeProcess } from '../helpers/node-process.js';
import {
  collectKeys,
  describeCli,
  expectCode,
  grpcErrorOf,
  kvErrorOf,
  makeTempDir,
  removeTempDir,
  runKvstore,
  SingleNode,
} from '../helpers/single-node.js';

const maxKeyBytes = 16;
const maxValueBytes = 1024;

/** Requests that break a limit or are malformed: INVALID_ARGUMENT naming the limit, nothing written, node alive. */
describe('bad requests against a node with small limits', () => {
  let single: SingleNode;
  let client: KvClient;
  let raw: KVStoreClient;

  beforeAll(async () => {
    single = await SingleNode.start('limits1', { limits: { maxKeyBytes, maxValueBytes } });
    client = single.client();
    raw = single.raw();
    await client.put('seed', 'seed-value');
  });

  afterAll(async () => {
    await single?.close();
  });

  /** The node still answers, and holds exactly `seed` plus what the test wrote. */
  async function expectServingWith(keys: string[]): Promise<void> {
    expect(await client.getString('seed')).toBe('seed-value');
    const listed = (await collectKeys(client.listKeys())).map(String);
    expect(listed).toEqual(['seed', ...keys].sort());
    const status = await client.status();
    expect(status.keyCount).toBe(keys.length + 1);
  }

  it('accepts a key of exactly maxKeyBytes and a value of exactly maxValueBytes', async () => {
    const key = 'k'.repeat(maxKeyBytes);
    await client.put(key, Buffer.alloc(maxValueBytes, 0xab));
    expect((await client.get(key))!.equals(Buffer.alloc(maxValueBytes, 0xab))).toBe(true);
    expect(await client.delete(key)).toBe(true);
    await expectServingWith([]);
  });

  it('refuses an empty key: in the SDK without a call, and at the node for every keyed RPC', async () => {
    const sdk = await kvErrorOf(client.put('', 'v'));
    expectCode(sdk, Status.INVALID_ARGUMENT);
    expect(sdk.details).toContain('empty');

    for (const call of [
      raw.put({ key: Buffer.alloc(0), value: Buffer.from('v') }),
      raw.get({ key: Buffer.alloc(0) }),
      raw.delete({ key: Buffer.alloc(0) }),
    ]) {
      const error = await grpcErrorOf(call);
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(error.details).toContain('empty');
    }
    await expectServingWith([]);
  });

  it('refuses a key over limits.maxKeyBytes on put, get and delete, naming the limit', async () => {
    const key = 'k'.repeat(maxKeyBytes + 1);
    for (const call of [client.put(key, 'v'), client.get(key), client.delete(key)]) {
      const error = await kvErrorOf(call);
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(error.details).toContain('limits.maxKeyBytes');
      expect(error.details).toContain(String(maxKeyBytes));
    }
    // A binary key over the limit too.
    const error = await kvErrorOf(client.put(Buffer.alloc(maxKeyBytes * 4, 0xff), 'v'));
    expectCode(error, Status.INVALID_ARGUMENT);
    expect(error.details).toContain('limits.maxKeyBytes');
    await expectServingWith([]);
  });

  it('refuses a value over limits.maxValueBytes, naming the limit, and leaves the old value in place', async () => {
    const error = await kvErrorOf(client.put('too-big', Buffer.alloc(maxValueBytes + 1)));
    expectCode(error, Status.INVALID_ARGUMENT);
    expect(error.details).toContain('limits.maxValueBytes');
    expect(error.details).toContain(String(maxValueBytes));
    expect(await client.get('too-big')).toBeUndefined();

    // Over an existing key: the old value stays.
    const overwrite = await kvErrorOf(client.put('seed', Buffer.alloc(maxValueBytes + 1, 1)));
    expectCode(overwrite, Status.INVALID_ARGUMENT);
    await expectServingWith([]);
  });

  it('answers a value far over the limit with RESOURCE_EXHAUSTED or INVALID_ARGUMENT, and survives', async () => {
    // 3x the limit still fits in a gRPC message the node accepts: the node's check answers.
    const threeTimes = await kvErrorOf(client.put('huge', Buffer.alloc(maxValueBytes * 3, 7)));
    expectCode(threeTimes, Status.RESOURCE_EXHAUSTED, Status.INVALID_ARGUMENT);
    // 1 MiB is beyond the node's gRPC receive limit (derived from the limits): gRPC answers.
    const farOver = await kvErrorOf(client.put('huge', Buffer.alloc(1024 * 1024, 7)));
    expectCode(farOver, Status.RESOURCE_EXHAUSTED, Status.INVALID_ARGUMENT);
    expect(await client.get('huge')).toBeUndefined();
    await expectServingWith([]);
  });

  it('refuses a consistency outside the enum (raw client, consistency 7) on put, get and delete', async () => {
    const calls = [
      raw.put({ key: Buffer.from('cons-bad'), value: Buffer.from('v'), consistency: 7 as never }),
      raw.get({ key: Buffer.from('cons-bad'), consistency: 7 as never }),
      raw.delete({ key: Buffer.from('seed'), consistency: 7 as never }),
    ];
    for (const call of calls) {
      const error = await grpcErrorOf(call);
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(error.details).toContain('consistency');
    }
    // Neither written nor deleted.
    await expectServingWith([]);
  });

  it('refuses a ListKeys prefix or start_after over limits.maxKeyBytes', async () => {
    const tooLong = 'p'.repeat(maxKeyBytes + 1);
    for (const options of [{ prefix: tooLong }, { startAfter: tooLong }]) {
      const error = await kvErrorOf(collectKeys(client.listKeys(options)));
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(error.details).toContain('limits.maxKeyBytes');
    }
    // At the limit both are fine.
    expect(await collectKeys(client.listKeys({ prefix: 'p'.repeat(maxKeyBytes) }))).toEqual([]);
    expect(await collectKeys(client.listKeys({ startAfter: 'z'.repeat(maxKeyBytes) }))).toEqual([]);
    await expectServingWith([]);
  });

  it('still serves normally after all of the above', async () => {
    await client.put('after', 'fine');
    expect(await client.getString('after')).toBe('fine');
    await expectServingWith(['after']);
    expect(single.node.running).toBe(true);
  });
});

describe('bad requests against a node with the default limits', () => {
  let single: SingleNode;
  let client: KvClient;

  beforeAll(async () => {
    single = await SingleNode.start('limits2');
    client = single.client();
  });

  afterAll(async () => {
    await single?.close();
  });

  it('refuses a 1025-byte key and a value of 1 MiB + 1, naming the default limits', async () => {
    const keyError = await kvErrorOf(client.put('k'.repeat(1025), 'v'));
    expectCode(keyError, Status.INVALID_ARGUMENT);
    expect(keyError.details).toContain('limits.maxKeyBytes');
    expect(keyError.details).toContain('1024');

    const valueError = await kvErrorOf(client.put('v', Buffer.alloc(1024 * 1024 + 1)));
    expectCode(valueError, Status.INVALID_ARGUMENT);
    expect(valueError.details).toContain('limits.maxValueBytes');

    // Exactly at the limits works.
    await client.put('k'.repeat(1024), Buffer.alloc(1024 * 1024, 3));
    expect((await client.get('k'.repeat(1024)))?.length).toBe(1024 * 1024);
    expect((await collectKeys(client.listKeys())).map(String)).toEqual(['k'.repeat(1024)]);
    expect(await client.get('v')).toBeUndefined();
  });
});

describe('bad configuration and refused data directories', () => {
  let dir: string;
  const started: NodeProcess[] = [];

  beforeAll(() => {
    dir = makeTempDir('kvstore-badcfg-');
  });

  afterEach(async () => {
    while (started.length > 0) await started.pop()!.stop();
  });

  afterAll(() => {
    removeTempDir(dir);
  });

  function writeConfig(name: string, config: Record<string, unknown>): string {
    const path = join(dir, name);
    writeFileSync(path, stringify({ nodeId: 'cfg1', listen: '127.0.0.1:0', dataDir: join(dir, 'cfg-data'), ...config }));
    return path;
  }

  it.each([
    ['an unknown key', { bogusOption: true }, 'bogusOption'],
    ['an unknown nested key', { limits: { maxKeyBites: 10 } }, 'maxKeyBites'],
    ['a listen address that is not host:port', { listen: 'nope' }, 'listen'],
    ['a replication factor of 0', { cluster: { replicationFactor: 0 } }, 'cluster.replicationFactor'],
    ['a replication factor above the member count', { cluster: { replicationFactor: 2 } }, 'cluster.replicationFactor'],
    ['a key limit LMDB cannot store', { limits: { maxKeyBytes: 5000 } }, 'limits.maxKeyBytes'],
    // Refused before anything is created, so the relative paths stay unused.
    ['a backup dir inside the data dir', { dataDir: 'never-made-data', backupDir: 'never-made-data/backups' }, 'backupDir'],
  ])('exits non-zero on %s, naming the config file and the problem', async (_what, config, reason) => {
    const path = writeConfig(`bad-${reason}.yaml`, config);
    const result = await runKvstore(['--config', path]);
    expect(result.timedOut, describeCli(result)).toBe(false);
    expect(result.code, describeCli(result)).not.toBe(0);
    expect(result.code, describeCli(result)).not.toBeNull();
    expect(result.stderr).toContain(path);
    expect(result.stderr).toContain(reason);
  });

  it('exits non-zero on a config file that is missing or not YAML', async () => {
    const missing = join(dir, 'missing.yaml');
    const noFile = await runKvstore(['--config', missing]);
    expect(noFile.code, describeCli(noFile)).not.toBe(0);
    expect(noFile.timedOut).toBe(false);
    expect(noFile.stderr).toContain(missing);

    const notYaml = join(dir, 'not-yaml.yaml');
    writeFileSync(notYaml, 'nodeId: [unclosed\n  listen: : :\n');
    const bad = await runKvstore(['--config', notYaml]);
    expect(bad.code, describeCli(bad)).not.toBe(0);
    expect(bad.timedOut).toBe(false);
    expect(bad.stderr).toContain(notYaml);
  });

  it('refuses a second process on a data dir in use, and the first keeps serving', async () => {
    const first = NodeProcess.create(dir, 'owner1');
    started.push(first);
    await first.start();
    const second = NodeProcess.create(dir, 'owner1-again', { nodeId: 'owner1', dataDir: first.dataDir });
    const result = await runKvstore(['--config', second.configPath]);
    expect(result.timedOut, describeCli(result)).toBe(false);
    expect(result.code, describeCli(result)).not.toBe(0);
    expect(result.stderr).toContain('in use');
    expect(result.stderr).toContain(first.dataDir);

    expect(first.running).toBe(true);
    const client = KvClient.connect(first.listen);
    try {
      await client.put('still', 'serving');
      expect(await client.getString('still')).toBe('serving');
    } finally {
      client.close();
    }
  });

  it('refuses a data dir written by another node id, and leaves it usable by its owner', async () => {
    const owner = NodeProcess.create(dir, 'alpha');
    started.push(owner);
    await owner.start();
    let client = KvClient.connect(owner.listen);
    await client.put('owned', 'by alpha');
    client.close();
    expect(await owner.stop()).toBe(0);

    const intruder = NodeProcess.create(dir, 'beta', { dataDir: owner.dataDir });
    const result = await runKvstore(['--config', intruder.configPath]);
    expect(result.timedOut, describeCli(result)).toBe(false);
    expect(result.code, describeCli(result)).not.toBe(0);
    expect(result.stderr).toContain('belongs to node');
    expect(result.stderr).toContain('alpha');

    await owner.start();
    client = KvClient.connect(owner.listen);
    try {
      expect(await client.getString('owned')).toBe('by alpha');
    } finally {
      client.close();
    }
  });
});
