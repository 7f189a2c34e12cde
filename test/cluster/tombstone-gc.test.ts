import { createChannel, createClient } from 'nice-grpc';
import { afterEach, describe, expect, it } from 'vitest';
import { PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { Ring } from '../../src/cluster/ring.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { TestCluster } from '../helpers/cluster.js';
import { diffReplicas, readReplica } from '../helpers/replica-state.js';
import { waitFor } from '../helpers/wait.js';

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Runs an on-demand anti-entropy round on one node (raw gRPC). */
async function repair(address: string) {
  const channel = createChannel(address);
  try {
    return await createClient(KVStoreDefinition, channel).repair({});
  } finally {
    channel.close();
  }
}

const graceSeconds = 10;
// Anti-entropy only on demand: the tests decide when replicas exchange.
const config = { tombstones: { graceSeconds }, antiEntropy: { intervalSeconds: 0, maxRecordsPerSecond: 50_000 } };

/** The test cluster's ring (n1..n3, the default vnodes), to pick keys by their first replica. */
const ring = new Ring(['n1', 'n2', 'n3'].map((id) => ({ id, peer: '127.0.0.1:1' })));
function keyWithPrimary(primary: string, prefix: string): string {
  for (let i = 0; ; i++) if (ring.preferenceList(Buffer.from(`${prefix}-${i}`), 3)[0] === primary) return `${prefix}-${i}`;
}

/** Waits until the wall clock is past `ms` (the condition is the age of something). */
function untilWallClockPast(ms: number) {
  return waitFor(`the wall clock to pass ${new Date(ms).toISOString()}`, () => Date.now() > ms, ms - Date.now() + 10_000);
}

describe('tombstone GC', () => {
  it('purges deleted keys after the grace once every replica holds them, and storage shrinks', async () => {
    cluster = await TestCluster.start({ size: 3, config });
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 40 }, (_, i) => `g-${i}`);
    await Promise.all(keys.map((k) => n1.put(k, 'v', { consistency: 'all' })));
    await Promise.all(keys.slice(0, 20).map((k) => n1.delete(k, { consistency: 'quorum' })));
    const sizes = await Promise.all(cluster.nodes.map(async (n) => (await readReplica(n.dataDir)).size));
    // Fresh tombstones are kept (the grace has not passed): 20 live + 20 tombstones.
    expect(Math.min(...sizes)).toBe(40);
    for (const node of cluster.nodes) {
      await waitFor(`${node.id} to purge its tombstones`, async () => (await cluster!.client(node.id).status()).recordCount === 20, 40_000);
      const contents = await readReplica(node.dataDir);
      expect([...contents.keys()].sort()).toEqual(keys.slice(20).sort());
    }
  });

  it('partial partition: replicas that cannot reach each other never purge a delete one of them missed; after the heal it stays deleted at ALL', async () => {
    cluster = await TestCluster.start({ size: 3, config });
    const [n1, n3] = [cluster.client('n1'), cluster.client('n3')];
    // zombie's first replica is n1, which cannot reach n2; control's is n3, which reaches both.
    const zombie = keyWithPrimary('n1', 'zombie');
    const control = keyWithPrimary('n3', 'control');
    await n1.put(zombie, 'old-live-value', { consistency: 'all' });
    await n1.put(control, 'v', { consistency: 'all' });
    for (const [a, b] of [['n1', 'n2'], ['n2', 'n1']] as const) cluster.proxy(a, b).cut();
    // The delete reaches n1 and n3, never n2 (n1 cannot reach it; nothing else copies it).
    await n1.delete(zombie, { consistency: 'quorum' });
    await n3.delete(control, { consistency: 'all' });
    // GC has run past the grace: the control tombstone, held by all three, is purged everywhere.
    for (const node of cluster.nodes) {
      await waitFor(`${node.id} to purge the control tombstone`, async () => !(await readReplica(node.dataDir)).has(control), 40_000);
    }
    // n1, the zombie's first replica, says why it does not purge it: n2 does not answer.
    await waitFor('n1 to report its GC held back by n2', async () => (await n1.status()).tombstoneGcHeldBack?.startsWith('n2 did not confirm') === true, 40_000);
    // ...but a node that purged the zombie's tombstone while n2 still holds the old value would
    // let that value come back: n2 must hold the tombstone (GC handed it over) or nobody purged.
    const states = await Promise.all(cluster.nodes.map(async (n) => (await readReplica(n.dataDir)).get(zombie)));
    const n2Live = states[1] !== undefined && !states[1].tombstone;
    const purgedSomewhere = states.some((s) => s === undefined);
    expect(n2Live && purgedSomewhere, `replica states: ${JSON.stringify(states)}`).toBe(false);
    cluster.heal();
    await cluster.waitAllReachable();
    for (const id of cluster.ids) await repair(cluster.node(id).listen);
    expect(await n1.get(zombie, { consistency: 'all' })).toBeUndefined();
    const converged = await waitFor('replicas to converge', async () => {
      for (const id of cluster!.ids) await repair(cluster!.node(id).listen);
      const replicas = await Promise.all(cluster!.nodes.map((n) => readReplica(n.dataDir)));
      return replicas.every((r) => diffReplicas(r, replicas[0]!).length === 0) && replicas[0]!;
    });
    const final = converged.get(zombie);
    expect(final === undefined || final.tombstone, JSON.stringify(final)).toBe(true);
  });

  it('a replication-log entry older than the grace is never sent, even by a coordinator that restarts with it', async () => {
    cluster = await TestCluster.start({ size: 3, config });
    const n1 = cluster.client('n1');
    await cluster.node('n3').stop();
    await n1.put('late', 'queued-for-n3', { consistency: 'quorum' });
    await waitFor('n1 to queue the entry for n3', async () => (await n1.status()).members.find((m) => m.nodeId === 'n3')!.backlogEntries === 1);
    const queuedAt = Date.now();
    await cluster.node('n1').stop();
    await untilWallClockPast(queuedAt + graceSeconds * 1000 + 1000);
    await cluster.startNode('n3');
    await cluster.startNode('n1');
    await cluster.waitAllReachable();
    const n1Again = cluster.client('n1');
    const n3View = await waitFor('n1 to have dropped its expired entry for n3', async () => {
      const m = (await n1Again.status()).members.find((x) => x.nodeId === 'n3')!;
      return m.backlogEntries === 0 && m;
    });
    expect(n3View.droppedEntries).toBe(1);
    expect((await readReplica(cluster.node('n3').dataDir)).has('late')).toBe(false);
  });

  it('a receiver refuses a log record older than its grace for a key it holds nothing of, and applies an anti-entropy one', async () => {
    cluster = await TestCluster.start({ size: 3, config });
    const channel = createChannel(cluster.node('n2').peerListen);
    try {
      const peer = createClient(PeerServiceDefinition, channel);
      const old = (value: string) => encodeRecord({ version: { wallMs: Date.now() - (graceSeconds + 60) * 1000, counter: 0, nodeId: 'n1' }, tombstone: false, value: Buffer.from(value) });
      const refused = await peer.replicate({ fromNodeId: 'n1', records: [{ key: Buffer.from('old-log'), record: old('x') }], wantPrevious: [], knownPrevious: [], fromLog: true });
      expect(refused.refused).toEqual([0]);
      const accepted = await peer.replicate({ fromNodeId: 'n1', records: [{ key: Buffer.from('old-ae'), record: old('y') }], wantPrevious: [], knownPrevious: [], fromLog: false });
      expect(accepted.refused).toEqual([]);
    } finally {
      channel.close();
    }
    const stored = await readReplica(cluster.node('n2').dataDir);
    expect(stored.has('old-log')).toBe(false);
    expect(stored.get('old-ae')?.value).toBe('y');
  });
});
