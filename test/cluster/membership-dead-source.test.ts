import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { kvctl } from '../helpers/probes.js';
import { unusedPort } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { directClients, membershipScenarioConfig } from '../helpers/membership-load.js';

/**
 * A source declared dead while a joiner streams from it (docs/membership.md §5.4), with real
 * processes: n4 is being added, n3 (the primary source of some of n4's ranges) is SIGKILLed
 * mid-stream and declared dead. n4 plans its transfers again without n3 and completes them from
 * the surviving replicas, without a restart, and the change completes. Before, a transfer whose
 * primary was declared dead waited for that primary for ever.
 */
const preloadKeys = 2000;

describe('membership change: a source declared dead mid-stream', () => {
  const dir = makeTempDir('kvstore-member-dead-source-');
  const nodes = new Map<string, NodeProcess>();
  const peerOf = new Map<string, string>();
  const { client, closeAll } = directClients(nodes);
  const common = { ...membershipScenarioConfig, membership: { deadAfterSeconds: 1 } };

  beforeAll(async () => {
    for (const id of ['n1', 'n2', 'n3', 'n4']) peerOf.set(id, `127.0.0.1:${await unusedPort()}`);
    const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: peerOf.get(id)! }));
    for (const m of members) nodes.set(m.id, NodeProcess.create(dir, m.id, { ...common, peerListen: m.peer, cluster: { members } }));
    // Slow streaming, so n3 can be killed part-way; failover only after a long while, so the
    // transfers n3 was primary of complete through the re-planning, not the failover.
    const streaming = { batchMaxBytes: 4 * 1024, maxBytesPerSecond: 48 * 1024, sourceFailoverSeconds: 600 };
    nodes.set('n4', NodeProcess.create(dir, 'n4', { ...common, streaming, peerListen: peerOf.get('n4'), cluster: { join: [peerOf.get('n1')!], replicationFactor: 3 } }));
    await Promise.all([...nodes.values()].map((n) => n.start()));
    await waitFor('n1 to reach n2 and n3', async () => (await client('n1').status()).members.every((m) => m.reachable));
  }, 60_000);

  afterAll(async () => {
    closeAll();
    await Promise.all([...nodes.values()].map((n) => n.stop()));
    removeTempDir(dir);
  });

  it('the joiner plans its transfers again without it and completes them from the surviving replicas', async () => {
    const n1 = client('n1');
    const written = new Map<string, string>();
    for (let i = 0; i < preloadKeys; i++) {
      const k = `ds:${i}`;
      written.set(k, `${k}=${'d'.repeat(60)}`);
      await n1.put(k, written.get(k)!, { consistency: 'all' });
    }
    await n1.changeMembership({ kind: 'add', nodeId: 'n4', peer: peerOf.get('n4')! });
    await waitFor('n4 to be part-way through its ranges', async () => {
      const p = (await client('n4').status()).membershipChangeProgress;
      return p !== undefined && p.keys >= 100 && p.transfersDone < p.transfersTotal;
    });
    await nodes.get('n3')!.kill();
    await waitFor('n3 to be declared dead', async () => (await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'mark-dead', 'n3'])).code === 0);
    await waitFor('n4 to plan again', () => nodes.get('n4')!.output().includes('streaming planned again without it'));
    // pending 2, mark-dead 3, switched 4, done 5: n4 was never restarted.
    await waitFor('the change to complete', async () => {
      const status = await n1.status();
      return status.membershipEpoch === 5 && !status.membershipChange;
    }, 90_000);
    // Every key is readable at QUORUM from the three live members, n4 answering its share.
    const n4 = client('n4');
    for (const [k, v] of written) expect((await n4.get(k, { consistency: 'quorum' }))?.toString(), k).toBe(v);
  }, 150_000);
});
