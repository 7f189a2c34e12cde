import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Ring } from '../../src/cluster/ring.js';
import type { KvClient } from '../../src/client/index.js';
import { TestCluster } from '../helpers/cluster.js';
import { diffReplicas, readReplica } from '../helpers/replica-state.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Node-to-node messages are bounded in bytes, requests and answers: anti-entropy pushes batches
 * within replication.batchMaxBytes, pulls and quorum reads split their keys by bytes and take
 * the short ReadReplica answers page by page, BucketRecords answers come in pages. Each test puts
 * far more into one ring range than one peer message admits, has anti-entropy push it to a wiped
 * replica and pull it back onto another, then reads it all at once through a coordinator that
 * must ask its peers.
 */

let cluster: TestCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

const KiB = 1024;
const MiB = 1024 * KiB;
/** The TestCluster defaults, repeated: a `replication` or `timeouts` override replaces them whole. */
const replicationTest = { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 };
/** Several-MiB messages on two shared cores: room beyond the helper's 1.5 s per peer call. */
const timeoutsTest = { requestMs: 20_000, peerCallMs: 10_000 };
const noBackground = { intervalSeconds: 0, maxRecordsPerSecond: 50_000 };
/** Puts in flight at once while loading a test's records. */
const putsAtOnce = 100;

/** `count` keys `${prefix}-<n>` that all fall in ring range `range`. */
function keysInRange(ring: Ring, range: number, prefix: string, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) {
    const key = `${prefix}-${i}`;
    if (ring.rangeIndexOf(Buffer.from(key)) === range) out.push(key);
  }
  return out;
}

function valueOf(key: string, bytes: number): string {
  return Buffer.alloc(bytes, `${key.slice(-12)}|`).toString('latin1');
}

/** Width of a ring range on the 2^32 hash circle. */
function width(r: { startExclusive: number; endInclusive: number }): number {
  return (r.endInclusive - r.startExclusive + 2 ** 32) % 2 ** 32 || 2 ** 32;
}

/**
 * Restarts every node (still empty) with `vnodes` virtual nodes per member: a ring of few, wide
 * ranges, so one range can hold thousands of keys without a test hashing millions of candidates.
 */
async function restartWithVnodes(c: TestCluster, vnodes: number) {
  await Promise.all(c.nodes.map((n) => n.stop()));
  for (const id of c.ids) {
    const members = c.ids.map((other) => ({ id: other, peer: other === id ? '127.0.0.1:0' : c.proxy(id, other).address }));
    c.node(id).updateConfig({ cluster: { members, vnodesPerMember: vnodes, ...(c.options.replicationFactor ? { replicationFactor: c.options.replicationFactor } : {}) } });
  }
  await Promise.all(c.ids.map((id) => c.startNode(id)));
  await c.waitAllReachable();
}

/** The contents of `ids` if they are identical, else false. */
async function identical(c: TestCluster, ids: readonly string[]) {
  const replicas = await Promise.all(ids.map((id) => readReplica(c.node(id).dataDir)));
  for (let i = 1; i < replicas.length; i++) if (diffReplicas(replicas[0]!, replicas[i]!).length > 0) return false;
  return replicas[0]!;
}

/** Stops `id`, deletes its data dir and starts it again: it holds nothing, and no log holds anything for it. */
async function wipe(c: TestCluster, id: string) {
  for (const node of c.ids) {
    const client = c.client(node);
    await waitFor(`${node}'s replication logs empty`, async () => (await client.status()).members.every((m) => m.backlogEntries === 0));
  }
  await c.node(id).stop();
  rmSync(c.node(id).dataDir, { recursive: true, force: true });
  await c.startNode(id);
  await c.waitAllReachable();
}

/**
 * Runs Repair on `id` until every exchange completes (a link just reconnected after a restart
 * may fail one call) and answers the records pulled and pushed over all attempts. An exchange
 * that keeps failing (as with a message over the limit) fails the wait with its error.
 */
async function repairFully(c: TestCluster, id: string) {
  const client = c.client(id);
  let pulled = 0;
  let pushed = 0;
  await waitFor(`Repair on ${id} to complete every exchange`, async () => {
    const report = await client.repair();
    for (const p of report.peers) {
      pulled += p.recordsPulled;
      pushed += p.recordsPushed;
    }
    const failed = report.peers.filter((p) => p.error !== undefined);
    if (failed.length > 0) throw new Error(failed.map((p) => `${p.nodeId}: ${p.error}`).join('; '));
    return true;
  });
  return { pulled, pushed };
}

/**
 * Writes `records` at ALL through `coordinator`; wipes replica `to` and has replica `from`
 * repair (every record pushed); wipes `from` and has it repair again (every record pulled);
 * then `replicas` all hold exactly `records`.
 */
async function pushAndPullAll(c: TestCluster, records: ReadonlyMap<string, string>, coordinator: string, from: string, to: string, replicas: readonly string[]) {
  const writer = c.client(coordinator);
  const entries = [...records];
  for (let i = 0; i < entries.length; i += putsAtOnce) await Promise.all(entries.slice(i, i + putsAtOnce).map(([k, v]) => writer.put(k, v, { consistency: 'all' })));
  await wipe(c, to);
  expect(await repairFully(c, from)).toEqual({ pulled: 0, pushed: records.size });
  await wipe(c, from);
  expect(await repairFully(c, from)).toEqual({ pulled: records.size, pushed: 0 });
  const contents = await waitFor(`${replicas.join(', ')} identical after repair`, () => identical(c, replicas));
  expect(contents.size).toBe(records.size);
  for (const [k, v] of records) expect(contents.get(k)?.value === v, k.slice(0, 40)).toBe(true);
}

/** Every key read at `consistency` through `client`, all asked in one event-loop turn (one ReadReplica batch per peer). */
async function expectReads(client: KvClient, expected: ReadonlyMap<string, string>, consistency: 'quorum' | 'all') {
  const keys = [...expected.keys()];
  const values = await Promise.all(keys.map((k) => client.get(k, { consistency })));
  keys.forEach((k, i) => expect(values[i]?.toString('latin1') === expected.get(k), `${consistency} read of ${k.slice(0, 40)}`).toBe(true));
}

describe('bounded peer messages', () => {
  it('repair pushes and pulls a ring range of 22 MiB of large values in byte-bounded messages; a non-replica coordinator reads them all at once', async () => {
    // Peer message limit: 1 MiB batches + 4 MiB values + overhead, about 5 MiB. Replication
    // factor 2: the third node coordinates reads of the range from its two replicas alone.
    cluster = await TestCluster.start({
      size: 3,
      replicationFactor: 2,
      config: {
        limits: { maxValueBytes: 4 * MiB },
        replication: { ...replicationTest, batchMaxBytes: 1 * MiB },
        timeouts: timeoutsTest,
        antiEntropy: noBackground,
      },
    });
    const ring = new Ring(cluster.ids.map((id) => ({ id })));
    const range = ring.rangeIndexOf(Buffer.from('big'));
    const replicas = ring.replicasOfRange(range, 2);
    const coordinator = cluster.ids.find((id) => !replicas.includes(id))!;
    // 16 values, 1 MiB each but two of the full 4 MiB (each larger than a batch: sent alone).
    const records = new Map<string, string>();
    keysInRange(ring, range, 'big', 16).forEach((k, i) => records.set(k, valueOf(k, i % 8 === 0 ? 4 * MiB : 1 * MiB)));

    await pushAndPullAll(cluster, records, coordinator, replicas[0]!, replicas[1]!, replicas);
    expect((await readReplica(cluster.node(coordinator).dataDir)).size).toBe(0);

    // Every key from both replicas: 22 MiB from each, asked in one batch per peer.
    const reader = cluster.client(coordinator);
    await expectReads(reader, records, 'all');
    await expectReads(reader, records, 'quorum');
  });

  it('repair of a ring range of 2,500 keys of 1974 bytes pages BucketRecords (5 MB of headers) and ReadReplica; reads of them all at once; verify agrees', async () => {
    // Peer message limit: 64 KiB batches + 64 KiB values + overhead = 192 KiB (4 MiB for what a
    // node receives). One vnode per member: 3 ranges, the widest holding every key.
    cluster = await TestCluster.start({
      size: 3,
      config: {
        limits: { maxKeyBytes: 1974, maxValueBytes: 64 * KiB },
        replication: { ...replicationTest, batchMaxBytes: 64 * KiB },
        timeouts: timeoutsTest,
        antiEntropy: noBackground,
      },
    });
    await restartWithVnodes(cluster, 1);
    const ring = new Ring(cluster.ids.map((id) => ({ id })), 1);
    const widest = ring.ranges().reduce((a, b) => (width(b) > width(a) ? b : a));
    const prefix = 'long'.padEnd(1974 - 8, 'k');
    const records = new Map<string, string>();
    for (const k of keysInRange(ring, widest.index, prefix, 2500)) records.set(k, valueOf(k, 1 * KiB));

    await pushAndPullAll(cluster, records, 'n1', 'n2', 'n3', cluster.ids);

    // 2,500 keys of 2 KB ask in several requests; each peer answers 7.5 MB in pages.
    await expectReads(cluster.client('n1'), records, 'all');
    await expectReads(cluster.client('n3'), records, 'quorum');
    expect((await cluster.client('n1').verify()).differingRanges).toBe(0);
  });
});
