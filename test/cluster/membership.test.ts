import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { TestCluster } from '../helpers/cluster.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { unusedPort } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { kvctl } from '../helpers/probes.js';

/**
 * The membership as persisted cluster state (docs/membership.md): seeded from cluster.members
 * as epoch 1 on every node, kept across restarts whatever the config says later, and `kvctl
 * member list`; mark-dead by agreement. The data-moving changes are in membership-add.test.ts.
 */
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

  it('member add of a node that is not running is refused, naming it (exit 3); an unknown action names those there are (exit 2)', async () => {
    const add = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'add', 'n4', '127.0.0.1:1']);
    expect(add.code).toBe(3);
    expect(add.err).toMatch(/n4 did not answer at 127\.0\.0\.1:1 .*start it with cluster\.join first/);
    const unknown = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('available: list, add, remove, replace, cancel, wait, mark-dead');
  });

  it('member add of a node placing keys differently (another replicationFactor or vnodesPerMember) is refused, naming the setting (exit 3)', async () => {
    const dir = makeTempDir('kvstore-member-placement-');
    const peer = `127.0.0.1:${await unusedPort()}`;
    const joiner = NodeProcess.create(dir, 'n4', { peerListen: peer, cluster: { join: [cluster.node('n1').listen], replicationFactor: 2 } });
    try {
      await joiner.start();
      const add = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'add', 'n4', peer]);
      expect(add.code, add.err).toBe(3);
      expect(add.err).toContain('n4 is configured with cluster.replicationFactor 2, this cluster with 3: start it with the same cluster.replicationFactor and cluster.vnodesPerMember as the members');
      expect((await cluster.client('n1').status()).membershipEpoch).toBe(1);
    } finally {
      await joiner.stop();
      removeTempDir(dir);
    }
  });

  it('a node started with cluster.join reports at start what its join addresses reach: the cluster and how to add it, or that none answers', async () => {
    const dir = makeTempDir('kvstore-member-join-probe-');
    const good = NodeProcess.create(dir, 'n5', { peerListen: `127.0.0.1:${await unusedPort()}`, cluster: { join: ['127.0.0.1:1', cluster.node('n2').peerListen], replicationFactor: 3 } });
    // n6 also places keys differently: it is warned at start, before any add is refused.
    const bad = NodeProcess.create(dir, 'n6', { peerListen: `127.0.0.1:${await unusedPort()}`, cluster: { join: ['127.0.0.1:1'], replicationFactor: 3 } });
    const misplaced = NodeProcess.create(dir, 'n7', { peerListen: `127.0.0.1:${await unusedPort()}`, cluster: { join: [cluster.node('n1').peerListen], replicationFactor: 3, vnodesPerMember: 64 } });
    try {
      await Promise.all([good.start(), bad.start(), misplaced.start()]);
      await waitFor('n5 to report its join addresses', () => good.output().includes('reaches a kvstore cluster'));
      expect(good.output()).toContain(`cluster.join: ${cluster.node('n2').peerListen} reaches a kvstore cluster (n2 answered, at membership epoch 1): add this node there with \`kvctl member add n5 ${good.peerListen}\``);
      await waitFor('n6 to report its join address', () => bad.output().includes('no address reaches a kvstore cluster'));
      await waitFor('n7 to warn about its placement', () => misplaced.output().includes(`cluster.join: ${cluster.node('n1').peerListen} has cluster.vnodesPerMember 128, this node 64: \`member add\` will refuse n7`));
      expect(bad.output()).toMatch(/cluster\.join: no address reaches a kvstore cluster \(127\.0\.0\.1:1: .*\): check cluster\.join and that those members run; n6 waits to be added anyway/);
    } finally {
      await Promise.all([good.stop(), bad.stop(), misplaced.stop()]);
      removeTempDir(dir);
    }
  });

  it('the epoch is persisted: a restart keeps it; an edited member list is ignored with a warning (members change by agreement only)', async () => {
    const n3 = cluster.node('n3');
    await n3.stop();
    await n3.start();
    expect((await cluster.client('n3').status()).membershipEpoch).toBe(1);

    // n3 alone is told of a cluster without n2: it keeps the stored membership, and says why.
    const config = parse(readFileSync(n3.configPath, 'utf8')) as { cluster: { members: { id: string; peer: string }[] } };
    const original = config.cluster;
    await n3.stop();
    n3.updateConfig({ cluster: { ...original, members: original.members.filter((m) => m.id !== 'n2') } });
    await n3.start();
    const edited = await cluster.client('n3').status();
    expect(edited.membershipEpoch).toBe(1);
    expect(edited.members.map((m) => `${m.nodeId}:${m.state}`)).toEqual(['n1:normal', 'n2:normal', 'n3:normal']);
    expect(cluster.output()).toContain('differs from the stored membership of epoch 1 (n1, n2, n3): the stored membership is used');
    await n3.stop();
    n3.updateConfig({ cluster: original });
    await n3.start();
  }, 60_000);
});

/**
 * mark-dead, the first membership change carried out by agreement (docs/membership.md §2.5, plan
 * step 4): refused while the member answers, agreed by every live member once it is gone, then
 * the dead member gets no writes, holds no tombstone purge back, and on return learns its fate
 * from its peers before it serves and serves nothing.
 */
describe('member mark-dead', () => {
  const graceSeconds = 10;
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 3, config: { membership: { deadAfterSeconds: 1 }, tombstones: { graceSeconds }, antiEntropy: { intervalSeconds: 1 } } });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('is refused while the member answers, then agreed by the live members once it is gone: no writes to it, no purge held back, fenced on return', async () => {
    const endpoint = ['--endpoints', cluster.node('n1').listen];
    const alive = await kvctl([...endpoint, 'member', 'mark-dead', 'n3']);
    expect(alive.code).toBe(3);
    expect(alive.err).toMatch(/reached n3 \d+ s ago \(membership\.deadAfterSeconds is 1\): n3 is not dead/);
    for (const id of ['n1', 'n2', 'n3']) expect((await cluster.client(id).status()).membershipEpoch).toBe(1);

    // n3 holds every value, then misses the deletes.
    const n1 = cluster.client('n1');
    for (let i = 0; i < 20; i++) await n1.put(`md:${i}`, `v${i}`, { consistency: 'all' });
    await cluster.node('n3').kill();
    for (let i = 0; i < 10; i++) await n1.delete(`md:${i}`, { consistency: 'quorum' });
    const deletedAt = Date.now();
    // Past deadAfterSeconds since the last contact with n3 (the probers keep failing meanwhile).
    await waitFor('n1 and n2 to see n3 unreachable', async () => {
      for (const id of ['n1', 'n2']) if ((await cluster.client(id).status()).members.find((m) => m.nodeId === 'n3')!.reachable) return false;
      return true;
    });
    await new Promise((resolve) => setTimeout(resolve, 1_500));

    const marked = await kvctl([...endpoint, 'member', 'mark-dead', 'n3']);
    expect(marked.err).toBe('');
    expect(marked.code).toBe(0);
    expect(marked.out).toContain('n3 declared dead');
    expect(marked.out).toContain('(epoch 2)');
    for (const id of ['n1', 'n2']) {
      const status = await cluster.client(id).status();
      expect(status.membershipEpoch).toBe(2);
      expect(status.members.find((m) => m.nodeId === 'n3')).toMatchObject({ dead: true, state: 'normal' });
      // Its replication-log queue was dropped: nothing waits to be delivered to it.
      expect(status.members.find((m) => m.nodeId === 'n3')!.backlogEntries).toBe(0);
    }
    const list = await kvctl(['--endpoints', cluster.node('n2').listen, 'member', 'list']);
    expect(list.out).toContain('epoch 2 (as held by n2)');
    expect(list.out).toMatch(/^n3\s+\S+\s+normal DEAD\s+/m);
    const again = await kvctl([...endpoint, 'member', 'mark-dead', 'n3']);
    expect(again.code).toBe(3);
    expect(again.err).toContain('n3 is already marked dead');

    // Writes: QUORUM needs n1 and n2 only; ALL cannot be met and says why.
    await n1.put('md:after', 'x', { consistency: 'quorum' });
    await expect(n1.put('md:all', 'x', { consistency: 'all' })).rejects.toThrow(/n3 is declared dead/);

    // Tombstone GC no longer waits for n3: the deletes are purged on n1 and n2 after the grace.
    await waitFor(
      'the deletes to be purged on n1 and n2 without n3',
      async () => {
        // Each tombstone is purged by its first live replica (counted there), on every replica.
        const statuses = await Promise.all(['n1', 'n2'].map((id) => cluster.client(id).status()));
        if (statuses.reduce((sum, st) => sum + st.tombstonesPurged, 0) >= 10) return true;
        throw new Error(statuses.map((st) => `${st.nodeId}: purged ${st.tombstonesPurged}, held back: ${st.tombstoneGcHeldBack ?? '-'}`).join('; '));
      },
      deletedAt + graceSeconds * 1000 + 30_000 - Date.now(),
    );
    for (let i = 0; i < 10; i++) expect(await n1.get(`md:${i}`, { consistency: 'quorum' })).toBeUndefined();
    for (let i = 10; i < 20; i++) expect((await n1.get(`md:${i}`, { consistency: 'quorum' }))?.toString()).toBe(`v${i}`);

    // n3 comes back on its old data dir: it learns epoch 2 from its peers before it serves, and serves nothing.
    await cluster.startNode('n3');
    const n3 = cluster.client('n3');
    const status = await n3.status();
    expect(status.membershipEpoch).toBe(2);
    expect(status.members.find((m) => m.nodeId === 'n3')?.dead).toBe(true);
    await expect(n3.get('md:10')).rejects.toThrow(/n3 was declared dead at membership epoch 2: it serves nothing/);
    // Its stale copies of the purged keys never come back through the others (its anti-entropy
    // and its log are refused: fenced), across several anti-entropy rounds.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    for (let i = 0; i < 10; i++) expect(await n1.get(`md:${i}`, { consistency: 'quorum' })).toBeUndefined();
    expect(cluster.output()).toContain('membership epoch 2 learned from');
  }, 120_000);
});

describe('member remove of a member that is gone', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await TestCluster.start({ size: 4, replicationFactor: 3, config: { membership: { deadAfterSeconds: 1 }, antiEntropy: { intervalSeconds: 0 } } });
    await cluster.waitAllReachable();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('declares it dead first, by agreement, then streams its ranges from the surviving replicas: one command', async () => {
    const n1 = cluster.client('n1');
    const written = new Map<string, string>();
    for (let i = 0; i < 200; i++) {
      written.set(`gone:${i}`, `v${i}`);
      await n1.put(`gone:${i}`, `v${i}`, { consistency: 'all' });
    }
    await cluster.node('n4').kill();
    await waitFor('n1 to see n4 unreachable', async () => !(await n1.status()).members.find((m) => m.nodeId === 'n4')!.reachable);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // past deadAfterSeconds
    const removed = await kvctl(['--endpoints', cluster.node('n2').listen, 'member', 'remove', 'n4']);
    expect(removed.code, removed.out + removed.err).toBe(0);
    expect(removed.out).toContain('n4 declared dead first (no member reached it for membership.deadAfterSeconds); change 1: remove n4');
    // mark-dead 2; pending 3, switched 4, done 5.
    for (const id of ['n1', 'n2', 'n3']) {
      const status = await cluster.client(id).status();
      expect(status.membershipEpoch, id).toBe(5);
      expect(status.members.find((m) => m.nodeId === 'n4')!.state).toBe('removed');
    }
    // Three members with replication factor 3: each holds every key again, streamed (anti-entropy is off).
    await waitFor('every key on each of the three', async () => (await Promise.all(['n1', 'n2', 'n3'].map(async (id) => (await cluster.client(id).status()).recordCount))).every((c) => c === written.size));
    for (const [k, v] of written) expect((await n1.get(k, { consistency: 'all' }))?.toString(), k).toBe(v);
    const verify = await kvctl(['--endpoints', cluster.node('n1').listen, 'verify']);
    expect(verify.code, verify.out + verify.err).toBe(0);
  }, 120_000);
});
