import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { compareVersions } from '../../src/cluster/version.js';
import { TestCluster } from '../helpers/cluster.js';
import { readReplica } from '../helpers/replica-state.js';
import { waitFor } from '../helpers/wait.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Restarts `id` with its wall clock shifted by `offsetMs` (the KVSTORE_TEST_CLOCK_OFFSET_MS hook). */
async function restartWithClockOffset(c: TestCluster, id: string, offsetMs: number): Promise<void> {
  await c.node(id).stop();
  c.node(id).env = { KVSTORE_TEST_CLOCK_OFFSET_MS: String(offsetMs) };
  await c.startNode(id);
  await c.waitAllReachable();
}

/** Every replica's stored value for `key` (undefined for none, '<tombstone>' for a delete). */
async function replicaValues(c: TestCluster, key: string): Promise<(string | undefined)[]> {
  return Promise.all(c.nodes.map(async (n) => {
    const r = (await readReplica(n.dataDir)).get(key);
    return r === undefined ? undefined : r.tombstone ? '<tombstone>' : r.value;
  }));
}

describe('versions under clock skew', () => {
  it('a write after one from a node whose clock runs 20 s ahead (beyond clock.maxDriftMs) wins on every replica, and Put answers the earlier value', async () => {
    // Peers do not follow a clock beyond the drift bound: n1's versions stay 20 s ahead of theirs.
    cluster = await TestCluster.start({ size: 3, config: { clock: { maxDriftMs: 5_000 } } });
    await restartWithClockOffset(cluster, 'n1', 20_000);
    const [n1, n2, n3] = ['n1', 'n2', 'n3'].map((id) => cluster!.client(id));
    await n1!.put('skewed', 'from-the-future', { consistency: 'quorum' });
    const second = await n2!.put('skewed', 'later', { consistency: 'quorum' });
    expect(second.oldValue?.toString()).toBe('from-the-future');
    expect(await n3!.getString('skewed', { consistency: 'quorum' })).toBe('later');
    await n3!.delete('skewed', { consistency: 'quorum' });
    expect(await n1!.get('skewed', { consistency: 'quorum' })).toBeUndefined();
    await waitFor('every replica to hold the delete', async () => (await replicaValues(cluster!, 'skewed')).every((v) => v === '<tombstone>'));
  });

  it('a node whose clock runs 30 s behind, and which has not yet received the last write, still writes above it', async () => {
    cluster = await TestCluster.start({ size: 3 });
    await restartWithClockOffset(cluster, 'n3', -30_000);
    const [n1, n3] = [cluster.client('n1'), cluster.client('n3')];
    // n1 and n2 cannot deliver to n3 (one-way): n3 misses the first write but reaches both.
    for (const from of ['n1', 'n2']) cluster.proxy(from, 'n3').cut();
    await n1.put('behind', 'first', { consistency: 'quorum' });
    expect((await readReplica(cluster.node('n3').dataDir)).has('behind')).toBe(false);
    const second = await n3.put('behind', 'second', { consistency: 'quorum' });
    expect(second.oldValue?.toString()).toBe('first');
    expect(await n1.getString('behind', { consistency: 'quorum' })).toBe('second');
    cluster.heal();
    await waitFor('every replica to hold the second write', async () => (await replicaValues(cluster!, 'behind')).every((v) => v === 'second'));
    const status = await n3.status();
    expect(status.members.length).toBe(3);
  });

  it('a node wiped after running 20 s ahead never issues one of its earlier versions again: it starts above its peers\' clocks', async () => {
    cluster = await TestCluster.start({ size: 3 });
    await restartWithClockOffset(cluster, 'n1', 20_000);
    const n1 = cluster.client('n1');
    await n1.put('before-wipe', 'v', { consistency: 'all' });
    const earlier = (await readReplica(cluster.node('n2').dataDir)).get('before-wipe')!.version;
    await cluster.node('n1').stop();
    rmSync(cluster.node('n1').dataDir, { recursive: true, force: true });
    cluster.node('n1').env = {};
    await cluster.startNode('n1');
    await cluster.waitAllReachable();
    await cluster.client('n1').put('after-wipe', 'w', { consistency: 'all' });
    const later = (await readReplica(cluster.node('n2').dataDir)).get('after-wipe')!.version;
    expect(later.nodeId).toBe('n1');
    expect(compareVersions(later, earlier), `${JSON.stringify(later)} after ${JSON.stringify(earlier)}`).toBeGreaterThan(0);
  });
});
