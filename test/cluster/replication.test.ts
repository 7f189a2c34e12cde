import { afterEach, describe, expect, it } from 'vitest';
import { KvError, Status } from '../../src/client/index.js';
import { TestCluster } from '../helpers/cluster.js';
import { diffReplicas, mergeReplicas, readReplica } from '../helpers/replica-state.js';
import { waitFor } from '../helpers/wait.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Waits until every node's full contents are identical; returns them. */
async function converged(c: TestCluster) {
  return waitFor('all replicas to hold identical contents', async () => {
    const replicas = await Promise.all(c.nodes.map((n) => readReplica(n.dataDir)));
    for (let i = 1; i < replicas.length; i++) if (diffReplicas(replicas[0]!, replicas[i]!).length > 0) return false;
    return replicas[0]!;
  });
}

async function backlogTo(c: TestCluster, from: string, to: string): Promise<number> {
  const status = await c.client(from).status();
  return status.members.find((m) => m.nodeId === to)!.backlogEntries;
}

describe('3-node cluster, replicationFactor 3', () => {
  it('a write through n1 is read through n3 at QUORUM, and lands on every replica', async () => {
    cluster = await TestCluster.start({ size: 3 });
    await cluster.client('n1').put('greeting', 'hello', { consistency: 'quorum' });
    expect(await cluster.client('n3').getString('greeting', { consistency: 'quorum' })).toBe('hello');
    const put = await cluster.client('n2').put('greeting', 'again', { consistency: 'all' });
    expect(put).toMatchObject({ found: true });
    expect(put.oldValue?.toString()).toBe('hello');
    for (const id of cluster.ids) {
      await waitFor(`${id} to hold the write`, async () => (await cluster!.client(id).getString('greeting', { consistency: 'one' })) === 'again');
    }
  });

  it('SIGKILL n2: QUORUM writes keep succeeding, its backlog grows (Status and /metrics), and after restart drains to zero and n2 serves every write', async () => {
    cluster = await TestCluster.start({ size: 3, config: { metricsListen: '127.0.0.1:0' } });
    const n1 = cluster.client('n1');
    await cluster.node('n2').kill();
    const keys = Array.from({ length: 200 }, (_, i) => `down-${i}`);
    for (const k of keys) await n1.put(k, `v-${k}`, { consistency: 'quorum' });
    expect(await backlogTo(cluster, 'n1', 'n2')).toBeGreaterThanOrEqual(keys.length);
    const status = await n1.status();
    expect(status.members.find((m) => m.nodeId === 'n2')!.reachable).toBe(false);
    // The same view for Prometheus: n2's backlog and reachability, n3 caught up.
    const metrics = await (await fetch(`http://${cluster.node('n1').metricsListen}/metrics`)).text();
    const sample = (name: string, peer: string) => Number(new RegExp(`^${name}\\{peer="${peer}"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(sample('kvstore_replication_backlog_entries', 'n2')).toBeGreaterThanOrEqual(keys.length);
    expect(sample('kvstore_peer_reachable', 'n2')).toBe(0);
    expect(sample('kvstore_peer_reachable', 'n3')).toBe(1);
    expect(sample('kvstore_replication_delivered_entries_total', 'n3')).toBeGreaterThanOrEqual(keys.length);
    // Delivery latency per peer: n3 acknowledged batches; n2's series exists (from the start) too.
    expect(sample('kvstore_replication_delivery_duration_seconds_count', 'n3')).toBeGreaterThan(0);
    expect(sample('kvstore_replication_delivery_batch_entries_sum', 'n3')).toBeGreaterThanOrEqual(keys.length);
    expect(sample('kvstore_replication_delivery_duration_seconds_count', 'n2')).toBeGreaterThanOrEqual(0);
    // n3's peer server counts the batches n1's ReplicateStream brought it.
    const n3Metrics = await (await fetch(`http://${cluster.node('n3').metricsListen}/metrics`)).text();
    const received = /^kvstore_grpc_server_msg_received_total\{grpc_service="kvstore\.internal\.v1\.PeerService",grpc_method="ReplicateStream",grpc_type="bidi_stream"\} (\S+)$/m.exec(n3Metrics);
    expect(Number(received?.[1])).toBeGreaterThan(0);
    await cluster.startNode('n2');
    await waitFor('n1 backlog to n2 to drain', async () => (await backlogTo(cluster!, 'n1', 'n2')) === 0);
    await waitFor('n3 backlog to n2 to drain', async () => (await backlogTo(cluster!, 'n3', 'n2')) === 0);
    const n2 = cluster.client('n2');
    for (const k of keys) expect(await n2.getString(k, { consistency: 'one' })).toBe(`v-${k}`);
  });

  it('SIGKILL the coordinator right after W=ONE acks: after restart every write reaches every replica', async () => {
    cluster = await TestCluster.start({ size: 3 });
    // Hold n1's outgoing replication so the acknowledged writes exist only in n1's store and log.
    cluster.proxy('n1', 'n2').cut();
    cluster.proxy('n1', 'n3').cut();
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 100 }, (_, i) => `one-${i}`);
    await Promise.all(keys.map((k) => n1.put(k, `v-${k}`, { consistency: 'one' })));
    await cluster.node('n1').kill();
    cluster.heal();
    await cluster.startNode('n1');
    for (const id of ['n2', 'n3']) {
      const c = cluster.client(id);
      await waitFor(`${id} to receive every W=ONE write`, async () => {
        for (const k of keys) if ((await c.getString(k, { consistency: 'one' })) !== `v-${k}`) return false;
        return true;
      });
    }
  });

  it('W=ALL with a node down answers UNAVAILABLE within its deadline, and the write arrives when the node returns', async () => {
    cluster = await TestCluster.start({ size: 3 });
    await cluster.node('n3').kill();
    const n1 = cluster.client('n1');
    // Let n1 notice n3 is gone (its prober), so the answer is immediate rather than at the deadline.
    await waitFor('n1 to see n3 unreachable', async () => !(await n1.status()).members.find((m) => m.nodeId === 'n3')!.reachable);
    const err = await n1.put('all-key', 'all-value', { consistency: 'all', deadlineMs: 3000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KvError);
    expect([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED]).toContain((err as KvError).code);
    expect((err as KvError).message).toMatch(/replication log|replicas/);
    await cluster.startNode('n3');
    await waitFor('the W=ALL write to reach n3', async () => (await cluster!.client('n3').getString('all-key', { consistency: 'one' })) === 'all-value');
  });

  it('SIGSTOP a node during writes, SIGCONT it: nothing lost and the backlog drains', async () => {
    cluster = await TestCluster.start({ size: 3 });
    const n1 = cluster.client('n1');
    const acked = new Map<string, string>();
    let paused = false;
    const started = Date.now();
    for (let i = 0; i < 300 && Date.now() - started < 20_000; i++) {
      if (i === 50) {
        cluster.node('n3').pause();
        paused = true;
      }
      const key = `pause-${i % 120}`;
      const value = `v${i}`;
      await n1.put(key, value, { consistency: 'quorum' });
      acked.set(key, value);
    }
    expect(paused).toBe(true);
    cluster.node('n3').resume();
    await waitFor('backlog to n3 to drain', async () => (await backlogTo(cluster!, 'n1', 'n3')) === 0);
    const contents = await converged(cluster);
    for (const [key, value] of acked) expect(contents.get(key)?.value, key).toBe(value);
  });

  it('partition n3 from n1 and n2: W=ONE writes and deletes on both sides converge after heal, newest version wins, no resurrection', async () => {
    cluster = await TestCluster.start({ size: 3 });
    const [n1, n3] = [cluster.client('n1'), cluster.client('n3')];
    const keys = Array.from({ length: 60 }, (_, i) => `p-${i}`);
    for (const k of keys) await n1.put(k, `base-${k}`, { consistency: 'all' });
    cluster.partition(['n3']);
    for (const [i, k] of keys.entries()) {
      if (i % 3 === 0) await n1.put(k, `major-${k}`, { consistency: 'one' });
      if (i % 4 === 0) await n3.put(k, `minor-${k}`, { consistency: 'one' });
      if (i % 5 === 0) await n1.delete(k, { consistency: 'one' });
      if (i % 7 === 0) await n3.delete(k, { consistency: 'one' });
    }
    await n3.put('only-minor', 'x', { consistency: 'one' });
    await n1.put('only-major', 'y', { consistency: 'one' });
    const before = mergeReplicas(await Promise.all(cluster.nodes.map((n) => readReplica(n.dataDir))));
    cluster.heal();
    const after = await converged(cluster);
    expect(diffReplicas(after, before)).toEqual([]);
    for (const [i, k] of keys.entries()) {
      if (i % 5 === 0 || i % 7 === 0) {
        // Deleted on some side: it stays deleted unless a later write on the other side won by version.
        const rec = after.get(k)!;
        if (!rec.tombstone) expect(rec.version.nodeId === 'n3' ? i % 4 === 0 : i % 3 === 0).toBe(true);
      }
    }
    expect(await cluster.client('n2').getString('only-minor', { consistency: 'one' })).toBe('x');
  });
});

describe('5-node cluster, replicationFactor 3', () => {
  it('each key lives on exactly its 3 replicas and ListKeys through any node returns exactly the live keys', async () => {
    cluster = await TestCluster.start({ size: 5, replicationFactor: 3 });
    const { Ring } = await import('../../src/cluster/ring.js');
    const ring = new Ring(cluster.ids.map((id) => ({ id })));
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 300 }, (_, i) => `five-${String(i).padStart(3, '0')}`);
    await Promise.all(keys.map((k) => n1.put(k, k, { consistency: 'all' })));
    const deleted = keys.filter((_, i) => i % 10 === 0);
    await Promise.all(deleted.map((k) => n1.delete(k, { consistency: 'all' })));
    const live = keys.filter((k) => !deleted.includes(k)).sort();
    const contents = await Promise.all(cluster.nodes.map((n) => readReplica(n.dataDir)));
    for (const k of keys) {
      const holders = cluster.ids.filter((_, i) => contents[i]!.has(k)).sort();
      expect(holders, k).toEqual(ring.preferenceList(Buffer.from(k), 3).sort());
    }
    for (const id of cluster.ids) {
      const listed: string[] = [];
      for await (const key of cluster.client(id).listKeys({ prefix: 'five-' })) listed.push(key.toString());
      expect(listed, `ListKeys through ${id}`).toEqual(live);
    }
  });
});
