import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvClient } from '../../src/client/index.js';
import { checkFinal, inParallel, MembershipLoad } from '../helpers/membership-load.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { kvctl } from '../helpers/probes.js';
import { readReplica, testSeed } from '../helpers/replica-state.js';
import { TcpProxy, unusedPort } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Faults during a membership change, with real processes under 64 QUORUM clients whose every
 * operation is recorded and checked by the nemesis history checker (src/sim/checker.ts):
 * - a partition mid-change (docs/membership.md §2.3): no two nodes ever report different
 *   membership states at one epoch (Status of every node polled throughout), no step is agreed
 *   by either side while no side has every live member, the change completes after the heal;
 * - tombstone GC across a change (§6.2): deletes purged while a joiner streams, and a stale copy
 *   on a member declared dead, never come back.
 *
 * Peer links: every member dials every other through its own TcpProxy (a dial override in its
 * cluster.members, docs/membership.md §1.1 "Built"), while the agreed address of each member is
 * an ingress proxy of its own, which only nodes without overrides (joiners, started with
 * cluster.join) dial. So every directed link, the joiner's included, can be cut.
 */
const seed = testSeed('membership faults');
const clients = 64;

interface Placement {
  readonly replicationFactor: number;
  readonly vnodesPerMember: number;
}

/** Real processes with a proxy per directed peer link (see above). */
class ProxiedCluster {
  /** Made at start (a describe block whose tests are all filtered out leaves nothing behind). */
  private dir = '';
  readonly nodes = new Map<string, NodeProcess>();
  /** The address each node really listens on for peers. */
  private readonly peerPort = new Map<string, string>();
  /** from->to proxies (from a seeded member); `*->to`: the ingress a joiner dials (the agreed address). */
  private readonly proxies = new Map<string, TcpProxy>();
  private readonly clients = new Map<string, KvClient>();
  private readonly allClients: KvClient[] = [];

  constructor(
    readonly seeds: readonly string[],
    readonly spares: readonly string[],
    private readonly config: (id: string) => Record<string, unknown>,
    private readonly vnodesPerMember = 128,
  ) {}

  get ids(): string[] {
    return [...this.seeds, ...this.spares];
  }

  async start(): Promise<void> {
    this.dir = makeTempDir('kvstore-member-faults-');
    for (const id of this.ids) {
      this.peerPort.set(id, `127.0.0.1:${await unusedPort()}`);
      this.proxies.set(`*->${id}`, await new TcpProxy(this.peerPort.get(id)).start());
      for (const from of this.seeds) if (from !== id) this.proxies.set(`${from}->${id}`, await new TcpProxy(this.peerPort.get(id)).start());
    }
    // First start: seeds epoch 1 with the ingress addresses as the agreed ones ...
    const agreed = this.seeds.map((id) => ({ id, peer: this.proxy('*', id).address }));
    for (const id of this.seeds) this.nodes.set(id, NodeProcess.create(this.dir, id, { ...this.config(id), peerListen: this.peerPort.get(id), cluster: { members: agreed, replicationFactor: 3, vnodesPerMember: this.vnodesPerMember } }));
    await Promise.all(this.seeds.map((id) => this.nodes.get(id)!.start()));
    await Promise.all(this.seeds.map((id) => this.nodes.get(id)!.stop()));
    // ... then every member dials the others (spares included, once added) through its own proxies.
    for (const id of this.seeds) {
      const members = this.ids.map((other) => ({ id: other, peer: other === id ? this.proxy('*', id).address : this.proxy(id, other).address }));
      this.nodes.get(id)!.updateConfig({ cluster: { members, replicationFactor: 3, vnodesPerMember: this.vnodesPerMember } });
    }
    await Promise.all(this.seeds.map((id) => this.nodes.get(id)!.start()));
    for (const id of this.spares) {
      this.nodes.set(id, NodeProcess.create(this.dir, id, { ...this.config(id), peerListen: this.peerPort.get(id), cluster: { join: [this.proxy('*', this.seeds[0]!).address], replicationFactor: 3, vnodesPerMember: this.vnodesPerMember } }));
    }
    await Promise.all(this.spares.map((id) => this.nodes.get(id)!.start()));
    for (const id of this.seeds) await waitFor(`${id} to reach every member`, async () => (await this.client(id).status()).members.every((m) => m.reachable));
  }

  proxy(from: string, to: string): TcpProxy {
    const p = this.proxies.get(`${from}->${to}`);
    if (p === undefined) throw new Error(`no proxy ${from}->${to}`);
    return p;
  }

  /** The address a joiner is added at (members dial it through their own proxies). */
  joinerPeer(id: string): string {
    return this.proxy('*', id).address;
  }

  /** Cuts every link between the two groups, both ways (a joiner's outbound links are the ingress proxies). */
  split(a: readonly string[], b: readonly string[], mode: 'cut' | 'blackhole' = 'cut'): void {
    const breakLink = (p: TcpProxy | undefined) => (mode === 'cut' ? p?.cut() : p?.blackhole());
    for (const x of a) {
      for (const y of b) {
        for (const [from, to] of [
          [x, y],
          [y, x],
        ] as const) {
          breakLink(this.proxies.get(`${from}->${to}`));
          // A joiner dials the ingress of a member: cut it when the joiner is on the other side.
          if (!this.seeds.includes(from)) breakLink(this.proxy('*', to));
        }
      }
    }
  }

  heal(): void {
    for (const p of this.proxies.values()) p.heal();
  }

  node(id: string): NodeProcess {
    return this.nodes.get(id)!;
  }

  /** The SDK client of a node (one per public port: a restarted node listens on a new one). */
  client(id: string): KvClient {
    const listen = this.node(id).listen;
    let c = this.clients.get(`${id}@${listen}`);
    if (c === undefined) {
      this.clients.set(`${id}@${listen}`, (c = new KvClient({ endpoints: [listen], deadlineMs: 10_000, maxAttempts: 1 })));
      this.allClients.push(c);
    }
    return c;
  }

  async stop(): Promise<void> {
    for (const c of this.allClients) c.close();
    await Promise.all([...this.nodes.values()].map((n) => n.stop()));
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    if (this.dir !== '') removeTempDir(this.dir);
  }

  /** Waits until no member has a replication-log entry queued for a live member. */
  async drained(members: readonly string[]): Promise<void> {
    await waitFor('replication logs to be delivered', async () => {
      for (const id of members) if ((await this.client(id).status()).members.some((m) => !m.self && !m.dead && m.state !== 'removed' && m.backlogEntries > 0)) return false;
      return true;
    }, 60_000);
  }
}

/**
 * Polls Status of every running node every 100 ms and keeps, per epoch, the membership state
 * each node reported (members with their state and `dead`, and the change without its
 * progress): invariant A (docs/membership.md §2.3) is that there is one per epoch.
 */
class MembershipWatch {
  readonly seen = new Map<number, Map<string, string[]>>();
  polls = 0;
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(private readonly cluster: ProxiedCluster) {}

  static fingerprint(status: { members: readonly { nodeId: string; state: string; dead: boolean }[]; membershipChange?: string }): string {
    // Without peer addresses: a member's own entry shows where it listens, and an existing
    // member's address is not part of a step (docs/membership.md §1.1, "Built").
    const members = [...status.members].sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1)).map((m) => `${m.nodeId}:${m.state}${m.dead ? ':dead' : ''}`);
    // The change as agreed ("change 1: add n4 (...), phase pending"), without this node's view of its progress.
    const change = (status.membershipChange ?? '').replace(/, (streaming|waiting) .*$/, '');
    return `${members.join(' ')} | ${change}`;
  }

  start(): void {
    this.running = (async () => {
      while (!this.stopped) {
        await Promise.all(
          [...this.cluster.nodes.values()]
            .filter((n) => n.running && n.listen !== '')
            .map(async (n) => {
              try {
                const status = await this.cluster.client(n.id).status({ deadlineMs: 1000 });
                if (status.membershipEpoch === 0) return; // a joiner not added yet
                let states = this.seen.get(status.membershipEpoch);
                if (states === undefined) this.seen.set(status.membershipEpoch, (states = new Map()));
                const f = MembershipWatch.fingerprint(status);
                const by = states.get(f);
                if (by === undefined) states.set(f, [n.id]);
                else if (!by.includes(n.id)) by.push(n.id);
              } catch {
                // down, restarting, or busy: the next poll asks again
              }
            }),
        );
        this.polls++;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  /** Epochs at which two nodes reported different states. */
  splits(): string[] {
    return [...this.seen].filter(([, states]) => states.size > 1).map(([epoch, states]) => `epoch ${epoch}: ${[...states].map(([f, by]) => `${by.join(',')} saw ${f}`).join(' / ')}`);
  }

  describe(): string {
    return [...this.seen].sort(([a], [b]) => a - b).map(([epoch, states]) => `  epoch ${epoch}: ${[...states].map(([f, by]) => `[${by.join(',')}] ${f}`).join(' / ')}`).join('\n');
  }
}

/** Repair rounds on every member until verify agrees (no differing range, no strays). */
async function repairUntilVerified(cluster: ProxiedCluster, members: readonly string[]): Promise<void> {
  let last = '';
  for (let round = 1; round <= 4; round++) {
    for (const id of members) await cluster.client(id).repair({ deadlineMs: 60_000 });
    const v = await kvctl(['--endpoints', cluster.node(members[0]!).listen, 'verify']);
    if (v.code === 0) return;
    last = v.out + v.err;
  }
  throw new Error(`verify still differs after 4 repair rounds: ${last.slice(0, 2000)}`);
}

/** Starts the cluster and the watch before a describe block's tests; stops the load, the watch and every process after them. */
function startAndStopWith(cluster: ProxiedCluster, load: MembershipLoad, watch: MembershipWatch): void {
  beforeAll(async () => {
    await cluster.start();
    watch.start();
  }, 90_000);
  afterAll(async () => {
    await load.stop();
    await watch.stop();
    await cluster.stop();
  });
}

describe('a partition during a membership change, under 64 QUORUM clients', () => {
  const placement: Placement = { replicationFactor: 3, vnodesPerMember: 128 };
  const cluster = new ProxiedCluster(['n1', 'n2', 'n3'], ['n4'], () => ({
    replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
    timeouts: { requestMs: 5_000, peerCallMs: 1_000 },
    // Anti-entropy repairs what a partition left behind, outside the ranges that are moving.
    antiEntropy: { intervalSeconds: 5, maxRecordsPerSecond: 200_000 },
    // Slow streams, so the partition comes mid-stream; a source cut off is replaced soon.
    streaming: { batchMaxBytes: 8 * 1024, maxBytesPerSecond: 48 * 1024, sourceFailoverSeconds: 2 },
    // The default (30 s): a member cut off for less is never declared dead.
  }));
  const load = new MembershipLoad(seed, (id) => cluster.client(id));
  const watch = new MembershipWatch(cluster);

  startAndStopWith(cluster, load, watch);

  it('split {n1,n2} | {n3,n4} while n4 is being added: neither side agrees a step, the add completes after the heal, one state per epoch', async () => {
    const n1 = cluster.client('n1');
    await inParallel(2000, async (i) => {
      await load.own('put', n1, 'n1', `pre:${i}`, `pre:${i}:${'p'.repeat(60)}`);
      if (i % 5 === 0) await load.own('delete', n1, 'n1', `pre:${i}`);
    });
    load.start(['n1', 'n2', 'n3'], clients, 600);
    const added = await n1.changeMembership({ kind: 'add', nodeId: 'n4', peer: cluster.joinerPeer('n4') });
    expect(added.description).toContain('change 1: add n4');
    await waitFor('n4 to be part-way through its ranges', async () => {
      const p = (await cluster.client('n4').status()).membershipChangeProgress;
      return p !== undefined && p.keys > 0 && p.transfersDone < p.transfersTotal;
    });
    cluster.split(['n1', 'n2'], ['n3', 'n4']);
    // Each side tries a step: each needs every live member, so each fails naming one it could
    // not reach (after the proposal's 30 s deadline), and nothing is accepted anywhere.
    const attempts = await Promise.allSettled([
      cluster.client('n1').changeMembership({ kind: 'cancel' }, { deadlineMs: 45_000 }),
      cluster.client('n3').changeMembership({ kind: 'cancel' }, { deadlineMs: 45_000 }),
      cluster.client('n2').changeMembership({ kind: 'mark-dead', nodeId: 'n3' }, { deadlineMs: 45_000 }),
    ]);
    const statusDuringSplit = await Promise.all(['n1', 'n2', 'n3', 'n4'].map(async (id) => (await cluster.client(id).status()).membershipEpoch));
    cluster.heal();
    for (const [i, a] of attempts.entries()) {
      expect(a.status, `attempt ${i}: ${a.status === 'fulfilled' ? JSON.stringify(a.value) : ''}`).toBe('rejected');
      expect((a as PromiseRejectedResult).reason.message, `attempt ${i}`).toMatch(/did not answer/);
    }
    console.log(`during the split: epochs ${statusDuringSplit.join(', ')}; refusals:\n${attempts.map((a) => `  ${(a as PromiseRejectedResult).reason.message.slice(0, 300)}`).join('\n')}`);
    // Still the pending step of the add everywhere: nothing was agreed while split.
    expect(statusDuringSplit).toEqual([2, 2, 2, 2]);
    const waited = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'wait']);
    expect(waited.code, waited.err).toBe(0);
    expect(waited.err).toContain('no membership change in progress at epoch 4');
    await load.stop();
    const members = ['n1', 'n2', 'n3', 'n4'];
    for (const id of members) {
      const status = await cluster.client(id).status();
      expect(status.membershipEpoch, id).toBe(4);
      expect(status.members.map((m) => `${m.nodeId}:${m.state}`)).toEqual(members.map((m) => `${m}:normal`));
    }
    await cluster.drained(members);
    const dirs = new Map(members.map((id) => [id, cluster.node(id).dataDir]));
    await waitFor('the old owners to delete the ranges they lost', async () => (await checkFinal(load.history, dirs, placement)).misplaced.length === 0, 60_000);
    await repairUntilVerified(cluster, members);
    await load.readAll(cluster.client('n4'), 'n4');
    const final = await checkFinal(load.history, dirs, placement);
    console.log(`split during add: ${final.summary}\nmembership states seen (${watch.polls} polls):\n${watch.describe()}`);
    expect(watch.splits()).toEqual([]);
    expect(final.checked.violations.length, final.report).toBe(0);
    expect(final.misplaced.slice(0, 5)).toEqual([]);
  }, 240_000);

  it('the driver n1 black-holed from every other member while n3 is removed: mark-dead of it is refused, the remove completes after the heal', async () => {
    const first = load.history.ops.length;
    load.start(['n1', 'n2', 'n4'], clients, 400);
    const removing = kvctl(['--endpoints', cluster.node('n2').listen, 'member', 'remove', 'n3']);
    await waitFor('the remove to be pending', async () => (await cluster.client('n1').status()).membershipChange?.includes('remove n3') === true);
    cluster.split(['n1'], ['n2', 'n3', 'n4'], 'blackhole');
    // The others reached n1 within membership.deadAfterSeconds (30 s): each refuses to declare it dead.
    const markDead = await cluster
      .client('n2')
      .changeMembership({ kind: 'mark-dead', nodeId: 'n1' }, { deadlineMs: 45_000 })
      .then(
        (r) => `agreed: ${JSON.stringify(r)}`,
        (err: Error) => err.message,
      );
    console.log(`mark-dead of the isolated driver: ${markDead.slice(0, 300)}`);
    expect(markDead).toMatch(/n1 is not dead/);
    // The driver cannot move the change on while cut off (every member must agree): wait until
    // it has tried and failed, or for a while.
    const t0 = Date.now();
    await waitFor('the isolated driver to fail a step, or 8 s', () => Date.now() - t0 > 8000 || cluster.node('n1').output().includes('membership change step failed'), 20_000);
    const epochs = await Promise.all(['n1', 'n2', 'n3', 'n4'].map(async (id) => (await cluster.client(id).status()).membershipEpoch));
    cluster.heal();
    const removed = await removing;
    expect(removed.code, removed.out + removed.err).toBe(0);
    await load.stop();
    console.log(`while the driver was cut off: epochs ${epochs.join(', ')}`);
    const members = ['n1', 'n2', 'n4'];
    for (const id of members) {
      const status = await cluster.client(id).status();
      // pending 5, switched 6, done 7.
      expect(status.membershipEpoch, id).toBe(7);
      expect(status.members.filter((m) => m.state !== 'removed').map((m) => `${m.nodeId}:${m.state}`)).toEqual(members.map((m) => `${m}:normal`));
    }
    await cluster.drained(members);
    const dirs = new Map(members.map((id) => [id, cluster.node(id).dataDir]));
    await waitFor('the old owners to delete the ranges they lost', async () => (await checkFinal(load.history, dirs, placement)).misplaced.length === 0, 60_000);
    await repairUntilVerified(cluster, members);
    const c = cluster.client('n2');
    const keys = [...new Set(load.history.ops.slice(first).map((op) => op.key))];
    for (let i = 0; i < keys.length; i += 64) await Promise.all(keys.slice(i, i + 64).map((k) => load.own('get', c, 'n2', k).catch(() => undefined)));
    const final = await checkFinal(load.history, dirs, placement);
    console.log(`driver cut off during a remove: ${final.summary}\nmembership states seen (${watch.polls} polls):\n${watch.describe()}`);
    expect(watch.splits()).toEqual([]);
    expect(final.checked.violations.length, final.report).toBe(0);
    expect(final.misplaced.slice(0, 5)).toEqual([]);
  }, 150_000);
});

describe('tombstone GC across membership changes (tombstones.graceSeconds 10)', () => {
  // Few vnodes: few ranges, each streamed as one page (batchMaxBytes) that waits in the joiner's
  // byte throttle between its fetch and its apply, for many seconds for the later ones: longer
  // than the grace. A purge in a moving range meanwhile would let such a page bring back a value
  // deleted after it was read (docs/membership.md §6.2, "No purge in moving ranges").
  const placement: Placement = { replicationFactor: 3, vnodesPerMember: 8 };
  const graceSeconds = 10;
  const common = {
    replication: { retryMinMs: 20, retryMaxMs: 500, probeIntervalMs: 250 },
    timeouts: { requestMs: 5_000, peerCallMs: 1_000 },
    // Off: only the streams, the writes and GC move data, so whatever comes back is theirs.
    antiEntropy: { intervalSeconds: 0 },
    tombstones: { graceSeconds },
    membership: { deadAfterSeconds: 1 },
  };
  const throttled = { batchMaxBytes: 4 * 1024 * 1024, maxBytesPerSecond: 16 * 1024, rangesInFlight: 64 };
  const cluster = new ProxiedCluster(['n1', 'n2', 'n3'], ['n4'], (id) => ({ ...common, streaming: id === 'n4' ? throttled : { batchMaxBytes: 4 * 1024 * 1024, maxBytesPerSecond: 0 } }), placement.vnodesPerMember);
  const load = new MembershipLoad(seed + 1, (id) => cluster.client(id));
  const watch = new MembershipWatch(cluster);
  const big = (key: string) => `${key}:${'b'.repeat(1000)}`;

  startAndStopWith(cluster, load, watch);

  it('deletes acknowledged while n4 streams (old values already read into its pages) are not purged in moving ranges: none comes back', async () => {
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 600 }, (_, i) => `gc:${i}`);
    await inParallel(keys.length, (i) => load.own('put', n1, 'n1', keys[i]!, big(keys[i]!)));
    load.start(['n1', 'n2', 'n3'], clients, 400);
    await n1.changeMembership({ kind: 'add', nodeId: 'n4', peer: cluster.joinerPeer('n4') });
    // Every range's page is fetched at once (rangesInFlight): once one is applied, the others
    // hold the values read before the deletes below, and wait in the throttle.
    await waitFor('n4 to apply its first page', async () => ((await cluster.client('n4').status()).membershipChangeProgress?.keys ?? 0) > 0);
    const deleted = keys.filter((_, i) => i % 2 === 0);
    await inParallel(deleted.length, (i) => load.own('delete', n1, 'n1', deleted[i]!));
    const waited = await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'wait']);
    expect(waited.code, waited.err).toBe(0);
    const purgedDuringChange = (await Promise.all(['n1', 'n2', 'n3', 'n4'].map(async (id) => (await cluster.client(id).status()).tombstonesPurged))).reduce((a, b) => a + b, 0);
    await load.stop();
    const members = ['n1', 'n2', 'n3', 'n4'];
    const dirs = new Map(members.map((id) => [id, cluster.node(id).dataDir]));
    await cluster.drained(members);
    // GC purges every deleted key once the change is over (nothing moves any more): wait until
    // no replica holds a tombstone of one (a resurrected value would stay, as a live record).
    await waitFor(
      'GC to purge the deleted keys everywhere',
      async () => {
        const replicas = await Promise.all(members.map((id) => readReplica(cluster.node(id).dataDir)));
        return deleted.every((k) => replicas.every((r) => r.get(k)?.tombstone !== true));
      },
      60_000,
    );
    // Asserted below, after the history check, which says what went wrong if anything did.
    await waitFor('the old owners to delete the ranges they lost', async () => (await checkFinal(load.history, dirs, placement)).misplaced.length === 0, 30_000).catch(() => undefined);
    for (const id of members) for (const k of deleted.slice(0, 50)) await load.own('get', cluster.client(id), id, k);
    await load.readAll(cluster.client('n4'), 'n4');
    const final = await checkFinal(load.history, dirs, placement);
    const live = deleted.filter((k) => [...final.replicas.values()].some((r) => r.get(k)?.tombstone === false));
    console.log(`GC across an add: ${final.summary}; tombstones purged by the end of the change: ${purgedDuringChange}; deleted keys live again somewhere: ${live.length}`);
    expect(purgedDuringChange).toBeGreaterThan(0);
    expect(final.checked.violations.length, final.report).toBe(0);
    expect(live.slice(0, 5)).toEqual([]);
    expect(final.misplaced.slice(0, 5)).toEqual([]);
    const verify = await kvctl(['--endpoints', cluster.node('n1').listen, 'verify']);
    expect(verify.code, verify.out + verify.err).toBe(0);
  }, 150_000);

  it('a stale copy on a member declared dead: deletes purged meanwhile stay deleted when it comes back and while it is removed', async () => {
    const n1 = cluster.client('n1');
    const keys = Array.from({ length: 200 }, (_, i) => `stale:${i}`);
    // At ALL: n2 holds every key it owns (about 3 in 4).
    await inParallel(keys.length, async (i) => {
      const op = load.history.invoke({ client: MembershipLoad.testClient, workload: 'unique', kind: 'put', key: keys[i]!, coordinator: 'n1', value: `${keys[i]}:old` });
      await n1.put(keys[i]!, `${keys[i]}:old`, { consistency: 'all' });
      load.history.complete(op, null);
    });
    await cluster.node('n2').kill();
    await waitFor('n2 to be declared dead', async () => (await kvctl(['--endpoints', cluster.node('n1').listen, 'member', 'mark-dead', 'n2'])).code === 0);
    await inParallel(keys.length, (i) => load.own('delete', n1, 'n1', keys[i]!));
    const live = ['n1', 'n3', 'n4'];
    await waitFor(
      'GC to purge the deletes on every live member (a dead one holds no purge back)',
      async () => {
        const replicas = await Promise.all(live.map((id) => readReplica(cluster.node(id).dataDir)));
        return keys.every((k) => replicas.every((r) => !r.has(k)));
      },
      60_000,
    );
    // n2 comes back on its old disk, with the old values: it learns it was declared dead and serves nothing.
    await cluster.node('n2').start();
    const staleOnN2 = [...(await readReplica(cluster.node('n2').dataDir))].filter(([k, r]) => k.startsWith('stale:') && !r.tombstone).length;
    expect(staleOnN2).toBeGreaterThan(100);
    await waitFor('n2 to refuse to serve', async () => {
      try {
        await cluster.client('n2').get('stale:1');
        return false;
      } catch (err) {
        return /declared dead/.test((err as Error).message);
      }
    });
    // It is removed under load: its ranges stream from the surviving replicas, not from it.
    load.start(['n1', 'n3', 'n4'], clients, 300);
    const removed = await kvctl(['--endpoints', cluster.node('n3').listen, 'member', 'remove', 'n2']);
    expect(removed.code, removed.out + removed.err).toBe(0);
    await load.stop();
    const dirs = new Map(live.map((id) => [id, cluster.node(id).dataDir]));
    for (const id of live) {
      const status = await cluster.client(id).status();
      // mark-dead 5; pending 6, switched 7, done 8.
      expect(status.membershipEpoch, id).toBe(8);
    }
    await cluster.drained(live);
    // Asserted below, after the history check, which says what went wrong if anything did.
    await waitFor('the old owners to delete the ranges they lost', async () => (await checkFinal(load.history, dirs, placement)).misplaced.length === 0, 30_000).catch(() => undefined);
    for (const id of live) for (const k of keys) await load.own('get', cluster.client(id), id, k);
    const final = await checkFinal(load.history, dirs, placement);
    console.log(`stale copy on a dead member: ${final.summary}; live stale copies on n2's disk: ${staleOnN2}\nmembership states seen (${watch.polls} polls):\n${watch.describe()}`);
    expect(final.checked.violations.length, final.report).toBe(0);
    expect(final.misplaced.slice(0, 5)).toEqual([]);
    expect(watch.splits()).toEqual([]);
    const verify = await kvctl(['--endpoints', cluster.node('n1').listen, 'verify']);
    expect(verify.code, verify.out + verify.err).toBe(0);
  }, 150_000);
});
