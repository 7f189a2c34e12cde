import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createChannel, createClient } from 'nice-grpc';
import { afterEach, describe, expect, it } from 'vitest';
import { KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { TestCluster } from '../helpers/cluster.js';
import { diffReplicas, readReplica, seededRandom, testSeed } from '../helpers/replica-state.js';
import { waitFor } from '../helpers/wait.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

function rawClient(address: string) {
  const channel = createChannel(address);
  return { client: createClient(KVStoreDefinition, channel), close: () => channel.close() };
}

/**
 * Runs the real kvctl binary against one node. Asynchronously: the peer links' TCP proxies live in
 * this test process, so blocking it (spawnSync) would stall the cluster.
 */
function kvctl(endpoint: string, ...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['dist/src/cli/kvctl.js', '--endpoints', endpoint, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
    });
  });
}

async function allIdentical(c: TestCluster) {
  const replicas = await Promise.all(c.nodes.map((n) => readReplica(n.dataDir)));
  for (let i = 1; i < replicas.length; i++) if (diffReplicas(replicas[0]!, replicas[i]!).length > 0) return false;
  return replicas[0]!;
}

/** On-demand repair on every node until all replicas are identical. */
async function repairUntilConverged(c: TestCluster) {
  return waitFor('anti-entropy to converge every replica', async () => {
    for (const id of c.ids) {
      const { client, close } = rawClient(c.node(id).listen);
      try {
        await client.repair({});
      } finally {
        close();
      }
    }
    return allIdentical(c);
  });
}

/** Background anti-entropy off; the tests trigger exchanges with Repair. */
const noBackground = { antiEntropy: { intervalSeconds: 0, maxRecordsPerSecond: 50_000 } };

describe('anti-entropy', () => {
  it('a node whose data dir was wiped while down is restored by anti-entropy alone (keys and tombstones)', async () => {
    const seed = testSeed('wipe');
    const random = seededRandom(seed);
    cluster = await TestCluster.start({ size: 3, config: noBackground });
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 400 }, (_, i) => `w-${i}`);
    await Promise.all(keys.map((k) => n1.put(k, `v-${k}`, { consistency: 'all' })));
    const deleted = keys.filter(() => random() < 0.2);
    await Promise.all(deleted.map((k) => n1.delete(k, { consistency: 'all' })));
    const before = await waitFor('replicas identical before the wipe', () => allIdentical(cluster!));
    await cluster.node('n3').stop();
    rmSync(cluster.node('n3').dataDir, { recursive: true, force: true });
    await cluster.startNode('n3');
    // Nothing is in any replication log (every write was acknowledged by ALL): only AE can help.
    expect((await readReplica(cluster.node('n3').dataDir)).size).toBe(0);
    const after = await repairUntilConverged(cluster);
    expect(diffReplicas(after, before)).toEqual([]);
    for (const k of deleted) expect(after.get(k)?.tombstone, k).toBe(true);
  });

  it('a node restored from a backup taken before 1,000 more writes and deletes converges to the cluster', async () => {
    cluster = await TestCluster.start({ size: 3, config: noBackground });
    const n1 = cluster.client('n1');
    await Promise.all(Array.from({ length: 300 }, (_, i) => n1.put(`b-${i}`, 'before', { consistency: 'all' })));
    const backup = await cluster.client('n2').backup();
    for (let i = 0; i < 1000; i++) {
      const k = `b-${i % 500}`;
      if (i % 4 === 3) await n1.delete(k, { consistency: 'all' });
      else await n1.put(k, `after-${i}`, { consistency: 'all' });
    }
    await cluster.node('n2').stop();
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, ['dist/src/cli/kvstore.js', 'restore', '--from', backup.path, '--config', cluster.node('n2').configPath]);
    await cluster.startNode('n2');
    await repairUntilConverged(cluster);
  });

  it('with the replication log over its byte limit during an outage, the cluster still converges', async () => {
    cluster = await TestCluster.start({ size: 3, config: { ...noBackground, hints: { maxAgeSeconds: 0, maxBytesPerPeer: 4096 } } });
    const n1 = cluster.client('n1');
    await cluster.node('n3').kill();
    await Promise.all(Array.from({ length: 500 }, (_, i) => n1.put(`h-${i}`, `value-${i}`.padEnd(64, '.'), { consistency: 'quorum' })));
    await waitFor('n1 to drop log entries for n3', async () => {
      const m = (await n1.status()).members.find((x) => x.nodeId === 'n3')!;
      return m.droppedEntries > 0 && m.backlogBytes <= 4096;
    });
    await cluster.startNode('n3');
    const contents = await repairUntilConverged(cluster);
    for (let i = 0; i < 500; i++) expect(contents.get(`h-${i}`)?.value).toBe(`value-${i}`.padEnd(64, '.'));
  });

  it('verify agrees on a converged cluster and names the range when one replica is corrupted on purpose', async () => {
    cluster = await TestCluster.start({ size: 3, config: noBackground });
    const n1 = cluster.client('n1');
    await Promise.all(Array.from({ length: 200 }, (_, i) => n1.put(`v-${i}`, 'x', { consistency: 'all' })));
    const { client, close } = rawClient(cluster.node('n1').listen);
    try {
      const ok = await client.verify({});
      expect(ok.differingRanges).toBe(0);
      const okCli = await kvctl(cluster.node('n1').listen, 'verify');
      expect(okCli.status, okCli.stdout + okCli.stderr).toBe(0);
      expect(ok.ranges.length).toBeGreaterThan(0);
      // Corrupt n2: rewrite one key with a different value at an old version, behind the node's back.
      await cluster.node('n2').stop();
      const { open } = await import('lmdb');
      const env = open({ path: `${cluster.node('n2').dataDir}/kvstore.mdb`, maxDbs: 8 });
      const records = env.openDB<Buffer, Buffer>({ name: 'records', encoding: 'binary', keyEncoding: 'binary' });
      await records.put(Buffer.from('v-7'), encodeRecord({ version: { wallMs: 1, counter: 0, nodeId: 'n2' }, tombstone: false, value: Buffer.from('corrupt') }));
      await env.close();
      await cluster.startNode('n2');
      await cluster.waitAllReachable();
      const { Ring } = await import('../../src/cluster/ring.js');
      const range = new Ring(cluster.ids.map((id) => ({ id }))).rangeIndexOf(Buffer.from('v-7'));
      const bad = await client.verify({});
      expect(bad.differingRanges).toBe(1);
      expect(bad.ranges.filter((r) => !r.agree).map((r) => r.range)).toEqual([range]);
      // The CLI: exit 5, naming the range.
      const cli = await kvctl(cluster.node('n1').listen, 'verify');
      expect(cli.status).toBe(5);
      expect(cli.stdout).toMatch(new RegExp(`\\b${range}\\b`));
      // Anti-entropy repairs it: the newer (real) version wins on n2 too.
      await repairUntilConverged(cluster);
      expect((await client.verify({})).differingRanges).toBe(0);
      expect(await cluster.client('n2').getString('v-7', { consistency: 'one' })).toBe('x');
    } finally {
      close();
    }
  });
});
