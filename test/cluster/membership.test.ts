import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { runKvctl } from '../../src/cli/kvctl.js';
import { TestCluster } from '../helpers/cluster.js';

/**
 * The membership as persisted cluster state, as far as it is built (docs/membership.md, step 2
 * in part): seeded from cluster.members as epoch 1 on every node, kept across restarts, an
 * edited member list adopted as the next epoch, and `kvctl member list`. Members do not change
 * by command yet; the commands of the design say so.
 */
async function kvctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runKvctl(args, { stdout: { write: (c) => ((out += c.toString()), true) }, stderr: { write: (c) => ((err += c.toString()), true) }, stdin: (async function* () {})(), env: {} });
  return { code, out, err };
}

describe('membership state', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3 });
    await cluster.waitAllReachable();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('kvctl member list: every member normal at epoch 1, owning a third of the ring each', async () => {
    const { code, out, err } = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'list']);
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(out).toContain('epoch 1 (as held by n1)');
    for (const id of ['n1', 'n2', 'n3']) expect(out).toMatch(new RegExp(`^${id}\\s+\\S+\\s+normal\\s+33\\.3%\\s+(self|yes)$`, 'm'));
    const status = await cluster.client('n2').status();
    expect(status.membershipEpoch).toBe(1);
    expect(status.members.map((m) => m.state)).toEqual(['normal', 'normal', 'normal']);
    expect(status.members.reduce((sum, m) => sum + m.ownedShare, 0)).toBeCloseTo(1, 9);
  });

  it('the actions that are not built yet say so (exit 2), and an unknown one names the one there is', async () => {
    const add = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'add', 'n4', '127.0.0.1:1']);
    expect(add.code).toBe(2);
    expect(add.err).toContain('member add: not available yet');
    const unknown = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('available: list, mark-dead');
  });

  it('the epoch is persisted: a restart keeps it; an edited member list is adopted as the next epoch', async () => {
    const n3 = cluster.node('n3');
    await n3.stop();
    await n3.start();
    expect((await cluster.client('n3').status()).membershipEpoch).toBe(1);

    // n3 alone is told of a cluster without n2: it adopts that as epoch 2 (and says so in its log).
    const config = parse(readFileSync(n3.configPath, 'utf8')) as { cluster: { members: { id: string; peer: string }[] } };
    const original = config.cluster;
    await n3.stop();
    n3.updateConfig({ cluster: { ...original, members: original.members.filter((m) => m.id !== 'n2') } });
    await n3.start();
    const edited = await cluster.client('n3').status();
    expect(edited.membershipEpoch).toBe(2);
    expect(edited.members.map((m) => m.nodeId)).toEqual(['n1', 'n3']);
    expect(cluster.output()).toContain('adopted as epoch 2');

    // Back to the full list: epoch 3 (epochs only grow), and the others never moved.
    await n3.stop();
    n3.updateConfig({ cluster: original });
    await n3.start();
    expect((await cluster.client('n3').status()).membershipEpoch).toBe(3);
    expect((await cluster.client('n1').status()).membershipEpoch).toBe(1);
  }, 60_000);
});
