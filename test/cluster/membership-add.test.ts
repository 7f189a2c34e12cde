import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKvctl } from '../../src/cli/kvctl.js';
import { KvClient } from '../../src/client/index.js';
import { Rng } from '../../src/common/rng.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { unusedPort } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * `kvctl member add` end to end with real processes (docs/membership.md §4.1): a fourth node
 * started with cluster.join is added to a 3-node cluster under QUORUM load. It receives its
 * ranges by streaming only (anti-entropy is off, so nothing else could copy them), writes go to
 * old and new owners meanwhile, reads move to it once it is complete, and the old owners delete
 * what they no longer own: afterwards every key is on exactly its 3 owners and nowhere else,
 * and every acknowledged write reads back. Seeded: KVSTORE_TEST_SEED replays the load.
 */
const seed = Number(process.env.KVSTORE_TEST_SEED ?? 20261202);
const preloadKeys = 3000;
const deletedKeys = 300;
const writers = 16;
/** Bounds of the load during the change: each writer stops at this many writes or when the change is over. */
const writesPerWriterMax = 400;

async function kvctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runKvctl(args, { stdout: { write: (c) => ((out += c.toString()), true) }, stderr: { write: (c) => ((err += c.toString()), true) }, stdin: (async function* () {})(), env: {} });
  return { code, out, err };
}

describe('member add (3 -> 4 nodes under load)', () => {
  const dir = makeTempDir('kvstore-member-add-');
  const nodes = new Map<string, NodeProcess>();
  const clients: KvClient[] = [];
  const client = (id: string) => {
    const c = new KvClient({ endpoints: [nodes.get(id)!.listen], deadlineMs: 10_000, maxAttempts: 1 });
    clients.push(c);
    return c;
  };
  const peerOf = new Map<string, string>();

  beforeAll(async () => {
    for (const id of ['n1', 'n2', 'n3', 'n4']) peerOf.set(id, `127.0.0.1:${await unusedPort()}`);
    const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: peerOf.get(id)! }));
    const common = {
      replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
      timeouts: { requestMs: 5_000, peerCallMs: 1_500 },
      antiEntropy: { intervalSeconds: 0 },
      // Small pages, so the stream takes many of them.
      streaming: { batchMaxBytes: 16 * 1024 },
    };
    for (const m of members) nodes.set(m.id, NodeProcess.create(dir, m.id, { ...common, peerListen: m.peer, cluster: { members } }));
    nodes.set('n4', NodeProcess.create(dir, 'n4', { ...common, peerListen: peerOf.get('n4'), cluster: { join: [members[0]!.peer], replicationFactor: 3 } }));
    await Promise.all([...nodes.values()].map((n) => n.start()));
    const n1 = client('n1');
    await waitFor('n1 to reach n2 and n3', async () => (await n1.status()).members.every((m) => m.reachable));
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all([...nodes.values()].map((n) => n.stop()));
    removeTempDir(dir);
  });

  it('streams n4 its ranges while writes continue, switches reads, cleans up: every key on exactly its 3 owners, no acknowledged write lost', async () => {
    console.log(`member add seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
    const rng = new Rng(seed);
    const n1 = client('n1');
    const value = (k: string, v: number) => `${k}=${v}:${'x'.repeat(60)}`;
    const expected = new Map<string, string | undefined>();
    for (let i = 0; i < preloadKeys; i++) {
      const k = `pre:${i}`;
      await n1.put(k, value(k, 0), { consistency: 'quorum' });
      expected.set(k, value(k, 0));
    }
    for (let i = 0; i < deletedKeys; i++) {
      const k = `pre:${i * 7}`;
      await n1.delete(k, { consistency: 'quorum' });
      expected.set(k, undefined);
    }

    // Not a member yet: it serves nothing, and says how to add it.
    await expect(client('n4').get('pre:1')).rejects.toThrow(/n4 is not a member yet \(started with cluster\.join\)/);

    // QUORUM writers through n1..n3, each on its own keys (so the last acknowledged value is known).
    let changing = true;
    const acked = new Map<string, string>();
    const indeterminate = new Set<string>();
    const writerClients = ['n1', 'n2', 'n3'].map((id) => client(id));
    const load = Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const c = writerClients[w % 3]!;
        for (let i = 0; i < writesPerWriterMax && changing; i++) {
          const k = `w:${w}:${Math.floor(rng.next() * 50)}`;
          const v = value(k, i + 1);
          try {
            await c.put(k, v, { consistency: 'quorum' });
            acked.set(k, v);
            indeterminate.delete(k);
          } catch {
            indeterminate.add(k);
          }
        }
      }),
    );

    // A change: refused while one is in progress, with what is in progress.
    const added = await n1.changeMembership({ kind: 'add', nodeId: 'n4', peer: peerOf.get('n4')! });
    expect(added.description).toContain('change 1: add n4');
    await expect(n1.changeMembership({ kind: 'add', nodeId: 'n5', peer: '127.0.0.1:1' })).rejects.toThrow(/change 1: add n4 .* is in progress/);
    const waited = await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'wait']);
    expect(waited.err).toContain('no membership change in progress at epoch 4');
    expect(waited.code).toBe(0);
    changing = false;
    await load;
    // No fault is injected: every write must succeed throughout the change (no downtime).
    expect([...indeterminate]).toEqual([]);
    for (const [k, v] of acked) expected.set(k, v);
    expect(acked.size).toBeGreaterThan(writers);

    // One state everywhere: n4 normal at epoch 4 (pending 2, switched 3, done 4), a quarter of the ring each.
    for (const id of ['n1', 'n2', 'n3', 'n4']) {
      const status = await client(id).status();
      expect(status.membershipEpoch).toBe(4);
      expect(status.members.map((m) => `${m.nodeId}:${m.state}`)).toEqual(['n1:normal', 'n2:normal', 'n3:normal', 'n4:normal']);
      for (const m of status.members) expect(m.ownedShare).toBeGreaterThan(0.15);
    }

    // The replicas agree before any read could repair them (anti-entropy is off).
    const verify = await kvctl(['--endpoints', nodes.get('n2')!.listen, 'verify']);
    expect(verify.code, verify.out + verify.err).toBe(0);

    // Every acknowledged write, through every node, n4 included.
    for (const id of ['n1', 'n4']) {
      const c = client(id);
      for (const [k, v] of expected) expect((await c.get(k, { consistency: 'quorum' }))?.toString(), `${k} via ${id}`).toBe(v);
    }

    // Exactly 3 copies of every key (tombstones included), once the old owners cleaned up.
    const distinct = expected.size;
    await waitFor('the old owners to delete the ranges they lost', async () => {
      const counts = await Promise.all(['n1', 'n2', 'n3', 'n4'].map(async (id) => (await client(id).status()).recordCount));
      return counts.reduce((a, b) => a + b, 0) === 3 * distinct;
    });
    expect((await client('n4').status()).recordCount).toBeGreaterThan(distinct * 0.5);
  }, 180_000);
});
