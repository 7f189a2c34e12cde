import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/client/index.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { unusedPort } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { healthOf, kvctl } from '../helpers/probes.js';
import { checkFinal, inParallel, MembershipLoad } from '../helpers/membership-load.js';

/**
 * `kvctl member add` end to end with real processes (docs/membership.md §4.1): a fourth node
 * started with cluster.join is added to a 3-node cluster under QUORUM load. It receives its
 * ranges by streaming only (anti-entropy is off, so nothing else could copy them), writes go to
 * old and new owners meanwhile, reads move to it once it is complete, and the old owners delete
 * what they no longer own: afterwards every key is on exactly its 3 owners and nowhere else.
 * Every client operation (64 clients at QUORUM running the nemesis workloads, the preload, the
 * final reads) is recorded in a History and checked by the nemesis history checker
 * (src/sim/checker.ts) against every final owner's record: no acknowledged write lost, no
 * acknowledged delete resurrected, no stale read. Seeded: KVSTORE_TEST_SEED replays the load.
 */
const seed = Number(process.env.KVSTORE_TEST_SEED ?? 20261202);
const preloadKeys = 3000;
const deletedKeys = 300;
const writers = 64;
/** Bounds of the load during the change: each client stops after this many operations or when the change is over. */
const opsPerClientMax = 800;

describe('membership changes under 64 QUORUM writers: 3 -> 4 -> 5 (joiner and a source killed mid-stream), 5 -> 4 (remove of a live member), replace and remove of dead members, cancel', () => {
  const dir = makeTempDir('kvstore-member-add-');
  const nodes = new Map<string, NodeProcess>();
  const clients: KvClient[] = [];
  const client = (id: string) => {
    const c = new KvClient({ endpoints: [nodes.get(id)!.listen], deadlineMs: 10_000, maxAttempts: 1 });
    clients.push(c);
    return c;
  };
  const peerOf = new Map<string, string>();
  const common = {
    replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
    timeouts: { requestMs: 5_000, peerCallMs: 1_500 },
    // Off: nothing but the streams and the writes may copy data to the new owners.
    antiEntropy: { intervalSeconds: 0 },
    // Small pages, so a stream takes many of them.
    streaming: { batchMaxBytes: 16 * 1024 },
    membership: { deadAfterSeconds: 1 },
  };

  beforeAll(async () => {
    for (const id of ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7']) peerOf.set(id, `127.0.0.1:${await unusedPort()}`);
    const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: peerOf.get(id)! }));
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

  const load = new MembershipLoad(seed, (id) => coordinatorClient(id), 10_000);
  const coordinators = new Map<string, KvClient>();
  /** One client per coordinator and public port (a restarted node listens on a new one). */
  const coordinatorClient = (id: string) => {
    const listen = nodes.get(id)!.listen;
    let c = coordinators.get(`${id}@${listen}`);
    if (c === undefined) coordinators.set(`${id}@${listen}`, (c = client(id)));
    return c;
  };
  const settings = { replicationFactor: 3, vnodesPerMember: 128 };
  /** Keys written by the preload: they are on every ring, so each change moves some of them. */
  const preloaded: string[] = [];
  /** Where the last round's operations begin in the history. */
  let roundStart = 0;

  /**
   * Runs `change` while 64 QUORUM clients go through `via` (each on its own keys, every operation
   * recorded for the history checker), and waits for the change to complete. No fault is injected
   * into the clients' path: every operation must succeed (no downtime).
   */
  async function underLoad(via: readonly string[], change: () => Promise<void>, options: { replicaDown?: boolean } = {}): Promise<void> {
    const first = (roundStart = load.history.ops.length);
    load.start(via, writers, opsPerClientMax);
    try {
      await change();
    } finally {
      await load.stop();
    }
    const ops = load.opsSince(first);
    const notOk = ops.filter((op) => op.outcome !== 'ok');
    if (options.replicaDown === true) {
      // With a replica down or declared dead, a QUORUM write to its ranges needs both other
      // replicas, so one slow answer fails it: UNAVAILABLE, indeterminate (it is in the log); the
      // history checker allows either outcome. Reads may fail the same way (not judged).
      // (The history keeps the first 300 characters of an error: the start says which it is.)
      for (const op of notOk) if (op.kind !== 'get') expect(`${op.kind} ${op.key}: ${op.error}`).toMatch(/: UNAVAILABLE: write reached \d+ of the \d+ replicas required at QUORUM/);
    } else {
      expect(notOk.slice(0, 5).map((op) => `${op.kind} ${op.key} via ${op.coordinator}: ${op.error}`), `${notOk.length} operations failed`).toEqual([]);
    }
    expect(ops.filter((op) => op.kind === 'put' && op.outcome === 'ok').length).toBeGreaterThan(writers);
  }

  /**
   * One state on every member; the old owners' cleanup done (every key on exactly its 3 owners and
   * nowhere else, tombstones included), replication logs delivered; verify agrees (before any read
   * could repair); every key written so far in this round and every preloaded key read back at
   * QUORUM; then the whole history checked against every owner's final record.
   */
  async function checkCluster(members: readonly string[], epoch: number): Promise<void> {
    for (const id of members) {
      const status = await coordinatorClient(id).status();
      expect(status.membershipEpoch, id).toBe(epoch);
      expect(status.members.filter((m) => m.state !== 'removed').map((m) => `${m.nodeId}:${m.state}`)).toEqual(members.map((m) => `${m}:normal`));
    }
    const dirs = new Map(members.map((id) => [id, nodes.get(id)!.dataDir]));
    await waitFor('replication logs to be delivered', async () => {
      for (const id of members) if ((await coordinatorClient(id).status()).members.some((m) => !m.self && !m.dead && m.state !== 'removed' && m.backlogEntries > 0)) return false;
      return true;
    });
    // The old owners delete what they lost once the change is over.
    // On a timeout the message names what was still misplaced (one such timeout, under a loaded
    // full run, was never reproduced alone).
    let misplaced: string[] = [];
    await waitFor('the old owners to delete the ranges they lost', async () => (misplaced = (await checkFinal(load.history, dirs, settings)).misplaced).length === 0).catch((err: Error) => {
      throw new Error(`${err.message}; ${misplaced.length} keys misplaced, first: ${misplaced.slice(0, 5).join('; ')}`);
    });
    // Every range agrees on its owners and no other member holds records of it ("nowhere
    // else"), before any read could repair a replica (anti-entropy is off).
    const verify = await kvctl(['--endpoints', nodes.get(members[0]!)!.listen, 'verify']);
    expect(verify.code, verify.out + verify.err).toBe(0);
    // QUORUM reads through the new ring (recorded: the checker judges them like the clients' reads).
    const via = members[members.length - 1]!;
    const keys = new Set([...preloaded, ...load.history.ops.slice(roundStart).map((op) => op.key)]);
    const c = coordinatorClient(via);
    const list = [...keys];
    await inParallel(list.length, (i) => load.own('get', c, via, list[i]!));
    const final = await checkFinal(load.history, dirs, settings);
    console.log(`epoch ${epoch}: ${final.summary}`);
    expect(final.checked.violations.length, final.report).toBe(0);
    expect(final.misplaced.slice(0, 5)).toEqual([]);
  }

  it('add: n4 streams its ranges while writes continue, reads switch, old owners clean up', async () => {
    console.log(`member add seed ${seed} (replay with KVSTORE_TEST_SEED=${seed})`);
    const n1 = client('n1');
    await inParallel(preloadKeys, async (i) => {
      preloaded.push(`pre:${i}`);
      await load.own('put', n1, 'n1', `pre:${i}`, `pre:${i}=0:${'x'.repeat(60)}`);
    });
    await inParallel(deletedKeys, (i) => load.own('delete', n1, 'n1', `pre:${i * 7}`));
    // Not a member yet: it serves nothing, and says how to add it.
    await expect(client('n4').get('pre:1')).rejects.toThrow(/n4 is not a member yet \(started with cluster\.join\)/);
    expect(await healthOf(nodes.get('n4')!.listen)).toBe(2); // NOT_SERVING until added

    await underLoad(['n1', 'n2', 'n3'], async () => {
      const added = await n1.changeMembership({ kind: 'add', nodeId: 'n4', peer: peerOf.get('n4')! });
      expect(added.description).toContain('change 1: add n4');
      // A second change while one is in progress is refused, saying what is in progress.
      await expect(n1.changeMembership({ kind: 'add', nodeId: 'n5', peer: '127.0.0.1:1' })).rejects.toThrow(/change 1: add n4 .* is in progress/);
      const waited = await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'wait']);
      expect(waited.err).toContain('no membership change in progress at epoch 4');
      expect(waited.code).toBe(0);
    });
    // Epochs: pending 2, switched 3, done 4; a quarter of the ring each.
    await checkCluster(['n1', 'n2', 'n3', 'n4'], 4);
    for (const m of (await n1.status()).members) expect(m.ownedShare).toBeGreaterThan(0.15);
    expect(await healthOf(nodes.get('n4')!.listen)).toBe(1); // SERVING once a member
    expect((await client('n4').status()).recordCount).toBeGreaterThan(load.history.byKey().size * 0.5);
  }, 180_000);

  /** Starts a node with cluster.join, streaming slowly (so a test can act mid-stream). */
  async function startJoiner(id: string): Promise<NodeProcess> {
    const node = NodeProcess.create(dir, id, { ...common, streaming: { batchMaxBytes: 4 * 1024, maxBytesPerSecond: 64 * 1024, sourceFailoverSeconds: 2 }, peerListen: peerOf.get(id), cluster: { join: [peerOf.get('n1')!], replicationFactor: 3 } });
    nodes.set(id, await node.start());
    return node;
  }

  it('4 -> 5: the joiner SIGKILLed mid-stream resumes from its cursors; a source SIGKILLed mid-stream is covered by the other replicas', async () => {
    const n6 = await startJoiner('n6');
    await underLoad(
      ['n1', 'n2', 'n4'],
      async () => {
        await client('n1').changeMembership({ kind: 'add', nodeId: 'n6', peer: peerOf.get('n6')! });
        const progressOf = async () => (await client('n6').status()).membershipChangeProgress;
        const before = await waitFor('n6 to be part-way through its ranges', async () => {
          const p = await progressOf();
          return p !== undefined && p.keys >= 300 && p.transfersDone < p.transfersTotal ? p : undefined;
        });
        await n6.kill();
        await n6.start();
        // Resumed, not restarted: the cursors persisted before the kill count from where it was
        // (a page per range in flight may be fetched again: 4 ranges of a few dozen records each).
        const after = await waitFor('n6 to report its progress again', progressOf);
        expect(after.keys).toBeGreaterThan(before.keys - 200);
        // A source dies mid-stream: after sourceFailoverSeconds n6 streams its ranges from their
        // other replicas too. It is a live member, so the change waits for it to come back.
        await waitFor('n6 to stream again', async () => ((await progressOf())?.keys ?? 0) > after.keys);
        await nodes.get('n3')!.kill();
        await waitFor('n6 to stream from the other replicas', () => nodes.get('n6')!.output().includes('primary source keeps failing: streaming the range from its fallbacks too'));
        await nodes.get('n3')!.start();
        const waited = await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'wait']);
        expect(waited.code, waited.err).toBe(0);
      },
      { replicaDown: true },
    );
    // pending 5, switched 6, done 7.
    await checkCluster(['n1', 'n2', 'n3', 'n4', 'n6'], 7);
  }, 180_000);

  it('5 -> 4, remove of a live member: n2 streams its ranges away, stops coordinating, then is removed and serves nothing', async () => {
    await underLoad(['n1', 'n4', 'n6'], async () => {
      const removed = await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'remove', 'n2']);
      expect(removed.code, removed.out + removed.err).toBe(0);
    });
    await checkCluster(['n1', 'n3', 'n4', 'n6'], 10);
    await expect(client('n2').get('pre:1')).rejects.toThrow(/node not serving: n2 was removed at membership epoch 10: it serves nothing/);
    expect(await healthOf(nodes.get('n2')!.listen)).toBe(2); // NOT_SERVING once removed
    // Nothing was run there, so the SDK sends even a write on to its next endpoint.
    const failover = new KvClient({ endpoints: [nodes.get('n2')!.listen, nodes.get('n1')!.listen], deadlineMs: 10_000 });
    clients.push(failover);
    await load.own('put', failover, 'n2,n1', 'after-remove', 'x');
    expect((await failover.get('after-remove'))?.toString()).toBe('x');
    const list = await kvctl(['--endpoints', nodes.get('n4')!.listen, 'member', 'list']);
    expect(list.out).toMatch(/^n2\s+\S+\s+removed\s+/m);
  }, 180_000);

  it('replace of a dead member: n5 takes over SIGKILLed n3\'s tokens, streamed from the surviving replicas', async () => {
    await nodes.get('n3')!.kill();
    await waitFor('n3 to be declared dead', async () => (await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'mark-dead', 'n3'])).code === 0);
    const n5 = NodeProcess.create(dir, 'n5', { ...common, peerListen: peerOf.get('n5'), cluster: { join: [peerOf.get('n1')!], replicationFactor: 3 } });
    nodes.set('n5', await n5.start());
    const before = (await client('n1').status()).members.find((m) => m.nodeId === 'n3')!.ownedShare;
    await underLoad(
      ['n1', 'n4', 'n6'],
      async () => {
        const replaced = await kvctl(['--endpoints', nodes.get('n4')!.listen, 'member', 'replace', 'n3', 'n5', peerOf.get('n5')!]);
        expect(replaced.err).toContain('no membership change in progress at epoch 14');
        expect(replaced.code, replaced.out + replaced.err).toBe(0);
      },
      { replicaDown: true },
    );
    // mark-dead 11; pending 12, switched 13, done 14. n5 owns exactly what n3 did.
    await checkCluster(['n1', 'n4', 'n5', 'n6'], 14);
    expect((await client('n1').status()).members.find((m) => m.nodeId === 'n5')!.ownedShare).toBeCloseTo(before, 9);
  }, 180_000);

  it('cancel while pending: the joiner is removed, the others keep exactly their ranges', async () => {
    await startJoiner('n7');
    await underLoad(['n1', 'n4', 'n5', 'n6'], async () => {
      await client('n4').changeMembership({ kind: 'add', nodeId: 'n7', peer: peerOf.get('n7')! });
      const cancelled = await kvctl(['--endpoints', nodes.get('n5')!.listen, 'member', 'cancel']);
      expect(cancelled.code, cancelled.err).toBe(0);
      expect(cancelled.out).toContain('change cancelled');
    });
    await checkCluster(['n1', 'n4', 'n5', 'n6'], 16);
    await expect(client('n7').get('pre:1')).rejects.toThrow(/n7 was removed at membership epoch 16/);
  }, 180_000);

  it('remove of a dead member: SIGKILLed n5 is declared dead, then removed; its ranges stream from the surviving replicas', async () => {
    await nodes.get('n5')!.kill();
    await waitFor('n5 to be declared dead', async () => (await kvctl(['--endpoints', nodes.get('n1')!.listen, 'member', 'mark-dead', 'n5'])).code === 0);
    await underLoad(
      ['n1', 'n4', 'n6'],
      async () => {
        const removed = await kvctl(['--endpoints', nodes.get('n6')!.listen, 'member', 'remove', 'n5']);
        expect(removed.code, removed.out + removed.err).toBe(0);
      },
      { replicaDown: true },
    );
    // mark-dead 17; pending 18, switched 19, done 20.
    await checkCluster(['n1', 'n4', 'n6'], 20);
  }, 180_000);
});
