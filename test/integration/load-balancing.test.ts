import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/client/index.js';
import { SingleNode } from '../helpers/single-node.js';

/**
 * How the SDK spreads calls over its endpoints, against three real, independent single-node
 * stores (each its own cluster), so where a write went shows in each node's key count.
 */
describe('KvClient loadBalancing over three endpoints', () => {
  let nodes: SingleNode[] = [];
  const clients: KvClient[] = [];
  const keysPerRound = 30;

  beforeAll(async () => {
    nodes = await Promise.all(['lb1', 'lb2', 'lb3'].map((id) => SingleNode.start(id)));
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await Promise.all(nodes.map((n) => n.close()));
  });

  function client(loadBalancing?: 'failover' | 'round-robin'): KvClient {
    const c = new KvClient({ endpoints: nodes.map((n) => n.node.listen), deadlineMs: 10_000, loadBalancing });
    clients.push(c);
    return c;
  }

  const keyCounts = () => Promise.all(nodes.map(async (n) => (await n.client().status()).keyCount));

  it('failover (the default) sends every call to the first endpoint', async () => {
    const c = client();
    for (let i = 0; i < keysPerRound; i++) await c.put(`failover/${i}`, 'v');
    expect(await keyCounts()).toEqual([keysPerRound, 0, 0]);
  });

  it('round-robin starts successive calls at successive endpoints', async () => {
    const before = await keyCounts();
    const c = client('round-robin');
    expect(c.currentEndpoint).toBe(nodes[0]!.node.listen);
    for (let i = 0; i < keysPerRound; i++) await c.put(`rr/${i}`, 'v');
    const after = await keyCounts();
    expect(after.map((n, i) => n - before[i]!)).toEqual([10, 10, 10]);
    // Reads rotate too, and each finds its key on the node that took the write.
    const found = [];
    for (let i = 0; i < keysPerRound; i++) found.push(await c.getString(`rr/${i}`));
    expect(found.every((v) => v === 'v')).toBe(true);
  });

  it('round-robin passes over a stopped endpoint: every call succeeds on the other two', async () => {
    const c = client('round-robin');
    await c.put('warm', 'v'); // connects to the first endpoint
    await nodes[1]!.node.stop();
    const before = await Promise.all([nodes[0]!, nodes[2]!].map(async (n) => (await n.client().status()).keyCount));
    for (let i = 0; i < keysPerRound; i++) await c.put(`down/${i}`, 'v');
    const after = await Promise.all([nodes[0]!, nodes[2]!].map(async (n) => (await n.client().status()).keyCount));
    const added = after.map((n, i) => n - before[i]!);
    expect(added[0]! + added[1]!).toBe(keysPerRound);
    // Spread over both survivors, not all piled on one.
    expect(Math.min(...added)).toBeGreaterThanOrEqual(keysPerRound / 3);
  });

  it('refuses an unknown loadBalancing value', () => {
    expect(() => new KvClient({ endpoints: ['127.0.0.1:1'], loadBalancing: 'random' as never })).toThrow(/loadBalancing must be 'failover' or 'round-robin'/);
  });
});
