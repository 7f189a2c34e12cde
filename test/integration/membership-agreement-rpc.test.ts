import { join } from 'node:path';
import { type Channel, ClientError, createChannel, createClient, createServer, Metadata, type Server, Status } from 'nice-grpc';
import type { CallContext } from 'nice-grpc-common';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { PeerServiceDefinition, type PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';
import { Rng } from '../../src/common/rng.js';
import { DigestForest } from '../../src/cluster/digest-tree.js';
import { HybridLogicalClock } from '../../src/cluster/hlc.js';
import { decodeAcceptorRecord, sameMembership } from '../../src/cluster/membership-agreement.js';
import { advanceChange, decodeMembership, encodeMembership, markDead, type MembershipState, proposeChange, seedMembership } from '../../src/cluster/membership.js';
import { Ring } from '../../src/cluster/ring.js';
import { RingView } from '../../src/cluster/ring-view.js';
import { systemClock } from '../../src/platform/clock.js';
import { ConcurrentMembershipChangeError, MembershipRefusedError, MembersUnreachableError } from '../../src/replication/errors.js';
import { type CommittedMembership, MembershipAcceptor, repositoryAcceptorStore } from '../../src/replication/membership-acceptor.js';
import { membershipToMessage } from '../../src/replication/membership-messages.js';
import { type BuildStep, type MembershipPeerClient, MembershipProposer, membershipFetcher } from '../../src/replication/membership-proposer.js';
import { errorMiddleware } from '../../src/server/error-middleware.js';
import { malformedRequestMiddleware, withMalformedRequestsMarked } from '../../src/server/malformed-requests.js';
import { createPeerService, type PeerServiceDeps } from '../../src/server/peer-service.js';
import { Repository } from '../../src/storage/repository.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

/**
 * Membership agreement over the real peer service (docs/membership.md §2.2): three nodes, each
 * with its own LMDB repository in a temp dir, its acceptor behind the peer-service handlers on a
 * real gRPC server on 127.0.0.1, and proposers calling them through generated clients.
 */

const ids = ['n1', 'n2', 'n3'];
const peerCallMs = 1_000;
/** Removals below 2 members are refused; 3 members leave room for one. */
const replicationFactor = 2;
const silent = pino({ level: 'silent' });

/** The node's committed membership, persisted in its repository as the lead's LiveMembership will. */
class StoredMembership implements CommittedMembership {
  /** Every state adopted, in order (the seed is not one). */
  readonly adopted: MembershipState[] = [];
  private state: MembershipState | undefined;

  constructor(private readonly repo: Repository) {
    const bytes = repo.membershipBytes();
    if (bytes !== undefined) this.state = decodeMembership(bytes);
  }

  current(): MembershipState {
    if (this.state === undefined) throw new Error('no membership yet');
    return this.state;
  }

  async seed(state: MembershipState): Promise<void> {
    await this.repo.storeMembershipBytes(encodeMembership(state));
    this.state = state;
  }

  async adopt(state: MembershipState): Promise<void> {
    await this.repo.storeMembershipBytes(encodeMembership(state));
    this.state = state;
    this.adopted.push(state);
  }
}

interface TestNode {
  readonly id: string;
  readonly dir: string;
  repo: Repository;
  repoOpen: boolean;
  readonly committed: StoredMembership;
  readonly acceptor: MembershipAcceptor;
  readonly server: Server;
  port: number;
  serving: boolean;
  /** This node's clients of the others (one channel each, as its peer links). */
  readonly clients: Map<string, PeerServiceClient>;
}

interface TestCluster {
  readonly nodes: Map<string, TestNode>;
  readonly seed: MembershipState;
  readonly channels: Channel[];
}

const clusters: TestCluster[] = [];

afterEach(async () => {
  for (const cluster of clusters.splice(0)) {
    for (const channel of cluster.channels) channel.close();
    for (const node of cluster.nodes.values()) {
      if (node.serving) node.server.forceShutdown();
      if (node.repoOpen) await node.repo.close();
      removeTempDir(node.dir);
    }
  }
});

function peerDeps(id: string, repo: Repository, acceptor: MembershipAcceptor | undefined, epoch: () => number): PeerServiceDeps {
  const ring = new Ring(ids.map((m) => ({ id: m })), 1);
  const forest = new DigestForest(ring);
  const view = RingView.from(seedMembership(ids.map((m) => ({ id: m, peer: `${m}:1` }))), { replicationFactor, vnodesPerMember: 1 });
  return {
    selfId: id,
    repo,
    clock: new HybridLogicalClock(id, Date.now),
    membership: { view: () => view, forest: () => forest, forestRing: () => view.unionRing },
    replicationFactor,
    maxKeyBytes: 1974,
    graceSeconds: 86_400,
    wallClock: Date.now,
    members: new Set(ids),
    assertServing: () => {},
    backup: () => Promise.reject(new Error('no backups here')),
    closing: new AbortController().signal,
    ...(acceptor === undefined ? {} : { agreement: acceptor }),
    membershipEpoch: epoch,
  };
}

/** Three nodes serving, each at epoch 1 of the same seed (members' peers are their real addresses). */
async function startCluster(): Promise<TestCluster> {
  const nodes = new Map<string, TestNode>();
  const channels: Channel[] = [];
  const addressOf = (id: string) => `127.0.0.1:${nodes.get(id)!.port}`;
  for (const id of ids) {
    const dir = makeTempDir(`kvstore-agreement-${id}-`);
    const repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: id, peers: ids.filter((p) => p !== id) });
    const committed = new StoredMembership(repo);
    const clients = new Map<string, PeerServiceClient>();
    const clientOf = (peer: string): PeerServiceClient | undefined => {
      if (!nodes.has(peer)) return undefined;
      let client = clients.get(peer);
      if (client === undefined) {
        const channel = createChannel(addressOf(peer));
        channels.push(channel);
        client = createClient(PeerServiceDefinition, channel);
        clients.set(peer, client);
      }
      return client;
    };
    const acceptor = new MembershipAcceptor({ store: repositoryAcceptorStore(repo), committed, fetchState: membershipFetcher(id, clientOf, systemClock, peerCallMs), replicationFactor });
    const server = createServer().use(errorMiddleware(silent));
    server.with(malformedRequestMiddleware()).add(withMalformedRequestsMarked(PeerServiceDefinition), createPeerService(peerDeps(id, repo, acceptor, () => committed.current().epoch)));
    const port = await server.listen('127.0.0.1:0');
    nodes.set(id, { id, dir, repo, repoOpen: true, committed, acceptor, server, port, serving: true, clients });
  }
  const seed = seedMembership(ids.map((id) => ({ id, peer: addressOf(id) })));
  for (const node of nodes.values()) await node.committed.seed(seed);
  const cluster = { nodes, seed, channels };
  clusters.push(cluster);
  return cluster;
}

function node(cluster: TestCluster, id: string): TestNode {
  return cluster.nodes.get(id)!;
}

/** Node `id`'s proposer; `transport` may stand between it and its clients (a lossy link). */
function proposer(cluster: TestCluster, id: string, seed: number, transport?: (peer: string, client: MembershipPeerClient) => MembershipPeerClient): MembershipProposer {
  const self = node(cluster, id);
  return new MembershipProposer({
    selfId: id,
    acceptor: self.acceptor,
    clientOf: (peer) => {
      if (!cluster.nodes.has(peer)) return undefined;
      let client = self.clients.get(peer);
      if (client === undefined) {
        const channel = createChannel(`127.0.0.1:${node(cluster, peer).port}`);
        cluster.channels.push(channel);
        client = createClient(PeerServiceDefinition, channel);
        self.clients.set(peer, client);
      }
      return transport === undefined ? client : transport(peer, client);
    },
    clock: systemClock,
    rng: new Rng(seed),
    peerCallMs,
    replicationFactor,
  });
}

const step =
  (fn: (committed: MembershipState) => { state: MembershipState } | { refusal: string }): BuildStep =>
  (committed) =>
    fn(committed);
const removeStep = (id: string) => step((c) => proposeChange(c, { kind: 'remove', id }, replicationFactor));

function epochs(cluster: TestCluster): Record<string, number> {
  return Object.fromEntries([...cluster.nodes.values()].map((n) => [n.id, n.committed.current().epoch]));
}

function record(n: TestNode) {
  const bytes = n.repo.acceptorBytes();
  return bytes === undefined ? undefined : decodeAcceptorRecord(bytes);
}

describe('membership agreement over the peer service', () => {
  it('commits a mark-dead on all three at epoch 2, and it survives reopening the repositories', async () => {
    const cluster = await startCluster();
    const committed = await proposer(cluster, 'n1', 1).propose(step((c) => markDead(c, 'n3')), 5_000);
    expect(committed.epoch).toBe(2);
    expect(committed.members.find((m) => m.id === 'n3')?.dead).toBe(true);
    for (const n of cluster.nodes.values()) {
      expect(n.committed.adopted.map((s) => s.epoch), n.id).toEqual([2]);
      expect(sameMembership(n.committed.current(), committed), n.id).toBe(true);
      // Promise and acceptance are cleared once their epoch is committed.
      expect(record(n), n.id).toBeUndefined();
    }
    for (const n of cluster.nodes.values()) {
      n.server.forceShutdown();
      n.serving = false;
      await n.repo.close();
      n.repo = Repository.open({ dataDir: join(n.dir, 'data'), nodeId: n.id, peers: ids.filter((p) => p !== n.id) });
      const stored = decodeMembership(n.repo.membershipBytes()!);
      expect(stored.epoch, n.id).toBe(2);
      expect(sameMembership(stored, committed), n.id).toBe(true);
      expect(n.repo.acceptorBytes(), n.id).toBeUndefined();
    }
  });

  it('persists a promise and an acceptance before answering: a reopened acceptor keeps both', async () => {
    const cluster = await startCluster();
    const n2 = node(cluster, 'n2');
    const client = node(cluster, 'n1').clients.get('n2') ?? createClient(PeerServiceDefinition, track(cluster, createChannel(`127.0.0.1:${n2.port}`)));
    const wanted = (markDead(cluster.seed, 'n3') as { state: MembershipState }).state;
    const ballot = { counter: 5n, proposer: 'n1' };
    const signal = () => AbortSignal.timeout(peerCallMs);
    expect(await client.membershipPrepare({ fromNodeId: 'n1', epoch: 2n, ballot, baseState: membershipToMessage(cluster.seed) }, { signal: signal() })).toMatchObject({ promised: true, committedEpoch: 1n });
    expect(await client.membershipAccept({ fromNodeId: 'n1', ballot, state: membershipToMessage(wanted) }, { signal: signal() })).toMatchObject({ accepted: true });

    n2.server.forceShutdown();
    n2.serving = false;
    await n2.repo.close();
    n2.repo = Repository.open({ dataDir: join(n2.dir, 'data'), nodeId: 'n2', peers: ['n1', 'n3'] });
    const reopened = new MembershipAcceptor({ store: repositoryAcceptorStore(n2.repo), committed: new StoredMembership(n2.repo), fetchState: () => Promise.reject(new Error('not needed')) });
    const lower = await reopened.prepare('n3', 2, { counter: 4, proposer: 'n3' });
    expect(lower.reply).toMatchObject({ kind: 'refused', reason: 'a higher ballot was promised', promised: { counter: 5, proposer: 'n1' } });
    const higher = await reopened.prepare('n3', 2, { counter: 6, proposer: 'n3' });
    expect(higher.reply.kind).toBe('promise');
    const accepted = higher.reply.kind === 'promise' ? higher.reply.accepted : undefined;
    expect(accepted?.ballot).toEqual({ counter: 5, proposer: 'n1' });
    expect(sameMembership(accepted!.state, wanted)).toBe(true);
  });

  it('two proposers racing different changes: exactly one committed state per epoch on every acceptor', async () => {
    for (const seed of [1, 2, 3, 4]) {
      const cluster = await startCluster();
      const results = await Promise.allSettled([proposer(cluster, 'n1', seed).propose(removeStep('n2'), 10_000), proposer(cluster, 'n2', seed + 100).propose(removeStep('n3'), 10_000)]);
      const won = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
      const lost = results.filter((r) => r.status === 'rejected').map((r) => r.reason as Error);
      // One change wins; the other is refused (it lost the epoch, or found change 1 in progress).
      expect(won, `seed ${seed}: ${lost.map((e) => e.message).join(' | ')}`).toHaveLength(1);
      expect(lost[0]).toBeInstanceOf(MembershipRefusedError);
      expect(lost[0]!.message).toMatch(/was completed instead|is in progress/);
      const byEpoch = new Map<number, MembershipState[]>();
      for (const n of cluster.nodes.values()) {
        expect(n.committed.current().epoch, `seed ${seed} ${n.id}`).toBe(2);
        for (const s of n.committed.adopted) byEpoch.set(s.epoch, [...(byEpoch.get(s.epoch) ?? []), s]);
      }
      expect([...byEpoch.keys()]).toEqual([2]);
      for (const s of byEpoch.get(2)!) expect(sameMembership(s, won[0]!), `seed ${seed}`).toBe(true);
    }
  });

  it('a change accepted by some members is finished by the next proposer, which reports that its own was not made', async () => {
    const cluster = await startCluster();
    // n2's accepts never reach n3: its change is accepted by n1 and n2 only, so not chosen.
    const acceptsLostToN3 = (peer: string, client: MembershipPeerClient): MembershipPeerClient =>
      peer !== 'n3' ? client : { ...passThrough(client), membershipAccept: () => Promise.reject(new ClientError('/kvstore.internal.v1.PeerService/MembershipAccept', Status.UNAVAILABLE, 'accept lost (test)')) };
    const stalled = (await proposer(cluster, 'n2', 21, acceptsLostToN3).propose(removeStep('n3'), 300).catch((err: unknown) => err)) as Error;
    expect(stalled).toBeInstanceOf(MembersUnreachableError);
    expect(epochs(cluster)).toEqual({ n1: 1, n2: 1, n3: 1 });
    expect(record(node(cluster, 'n1'))?.accepted?.state.change?.subjects).toEqual(['n3']);

    const failure = (await proposer(cluster, 'n1', 22).propose(removeStep('n2'), 5_000).catch((err: unknown) => err)) as Error;
    expect(failure).toBeInstanceOf(ConcurrentMembershipChangeError);
    expect(failure.message).toBe(`refused: change 1: remove n3 (127.0.0.1:${node(cluster, 'n3').port}), phase pending, proposed at the same time, was completed instead`);
    const committed = (failure as ConcurrentMembershipChangeError).committed;
    expect(epochs(cluster)).toEqual({ n1: 2, n2: 2, n3: 2 });
    for (const n of cluster.nodes.values()) expect(sameMembership(n.committed.current(), committed), n.id).toBe(true);
  });

  it('a member that does not answer fails the proposal at its deadline, naming it; nothing is committed', async () => {
    const cluster = await startCluster();
    const n3 = node(cluster, 'n3');
    n3.server.forceShutdown();
    n3.serving = false;
    const deadlineMs = 1_500;
    // No timing assertion (a loaded machine fires timers late): a proposer that ignored its
    // deadline would retry the refused connection for ever, and the test's timeout fails it.
    const failure = (await proposer(cluster, 'n1', 7).propose(removeStep('n2'), deadlineMs).catch((err: unknown) => err)) as Error;
    expect(failure).toBeInstanceOf(MembersUnreachableError);
    expect(failure.message).toContain(`n3 (127.0.0.1:${n3.port}) did not answer: every member must agree; bring it back, or declare it dead with \`kvctl member mark-dead n3\``);
    expect((failure as MembersUnreachableError).members).toEqual(['n3']);
    expect(epochs(cluster)).toEqual({ n1: 1, n2: 1, n3: 1 });
    for (const n of cluster.nodes.values()) expect(record(n)?.accepted, n.id).toBeUndefined();
  });

  it('a behind acceptor (epoch 1, the others at 2) catches up when asked to prepare epoch 3', async () => {
    const cluster = await startCluster();
    // n1's commit to n3 is lost: n3 accepted epoch 2 but never learned it was chosen.
    const losingCommitsToN3 = (peer: string, client: MembershipPeerClient): MembershipPeerClient =>
      peer !== 'n3'
        ? client
        : { ...passThrough(client), membershipCommit: () => Promise.reject(new ClientError('/kvstore.internal.v1.PeerService/MembershipCommit', Status.UNAVAILABLE, 'commit lost (test)')) };
    const epoch2 = await proposer(cluster, 'n1', 11, losingCommitsToN3).propose(removeStep('n3'), 5_000);
    expect(epochs(cluster)).toEqual({ n1: 2, n2: 2, n3: 1 });
    expect(record(node(cluster, 'n3'))?.accepted?.state.epoch).toBe(2);

    const epoch3 = await proposer(cluster, 'n2', 12).propose(step((c) => ({ state: advanceChange(c) })), 5_000);
    expect(epoch3.epoch).toBe(3);
    expect(epochs(cluster)).toEqual({ n1: 3, n2: 3, n3: 3 });
    const n3 = node(cluster, 'n3');
    expect(n3.committed.adopted.map((s) => s.epoch)).toEqual([2, 3]);
    expect(sameMembership(n3.committed.adopted[0]!, epoch2)).toBe(true);
    expect(sameMembership(n3.committed.current(), epoch3)).toBe(true);
    // Ping answers the committed epoch.
    const ping = await node(cluster, 'n1').clients.get('n3')!.ping({ fromNodeId: 'n1' }, { signal: AbortSignal.timeout(peerCallMs) });
    expect(ping.membershipEpoch).toBe(3n);
  });

  it('an illegal transition is refused at accept with the reason, by the peer service and by the proposer', async () => {
    const cluster = await startCluster();
    const twoChanged: MembershipState = {
      ...cluster.seed,
      epoch: 2,
      members: cluster.seed.members.map((m) => (m.id === 'n2' ? { ...m, state: 'leaving' as const } : m.id === 'n3' ? { ...m, dead: true as const } : m)),
    };
    const reason = /not one membership step from epoch 1 \(members n2, n3 changed\)/;
    const client = createClient(PeerServiceDefinition, track(cluster, createChannel(`127.0.0.1:${node(cluster, 'n2').port}`)));
    const ballot = { counter: 1n, proposer: 'n1' };
    const signal = () => AbortSignal.timeout(peerCallMs);
    expect((await client.membershipPrepare({ fromNodeId: 'n1', epoch: 2n, ballot, baseState: membershipToMessage(cluster.seed) }, { signal: signal() })).promised).toBe(true);
    const refused = await client.membershipAccept({ fromNodeId: 'n1', ballot, state: membershipToMessage(twoChanged) }, { signal: signal() });
    expect(refused.accepted).toBe(false);
    expect(refused.reason).toMatch(reason);
    expect(refused.committedEpoch).toBe(1n);
    expect(record(node(cluster, 'n2'))?.accepted).toBeUndefined();

    // A ballot under another member's id is malformed.
    await expect(client.membershipPrepare({ fromNodeId: 'n1', epoch: 2n, ballot: { counter: 9n, proposer: 'n3' }, baseState: membershipToMessage(cluster.seed) }, { signal: signal() })).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      details: expect.stringMatching(/carries a ballot of "n3": a member proposes under its own id only/),
    });

    const failure = (await proposer(cluster, 'n1', 5).propose(() => ({ state: twoChanged }), 5_000).catch((err: unknown) => err)) as Error;
    expect(failure).toBeInstanceOf(MembershipRefusedError);
    expect(failure.message).toMatch(reason);
    expect(epochs(cluster)).toEqual({ n1: 1, n2: 1, n3: 1 });
  });

  it('a node without an acceptor answers the agreement RPCs UNIMPLEMENTED, and Ping with epoch 0', async () => {
    const dir = makeTempDir('kvstore-agreement-off-');
    const repo = Repository.open({ dataDir: join(dir, 'data'), nodeId: 'n1', peers: ['n2', 'n3'] });
    try {
      const { membershipEpoch: _none, ...deps } = peerDeps('n1', repo, undefined, () => 0);
      const service = createPeerService(deps);
      const context: CallContext = { metadata: Metadata(), peer: 'test', header: Metadata(), sendHeader: () => {}, trailer: Metadata(), signal: new AbortController().signal };
      await expect(service.getMembership({ fromNodeId: 'n2' }, context)).rejects.toMatchObject({ code: Status.UNIMPLEMENTED, details: 'membership agreement is not enabled on this node' });
      await expect(service.membershipCommit({ fromNodeId: 'n2', state: undefined }, context)).rejects.toMatchObject({ code: Status.UNIMPLEMENTED });
      expect((await service.ping({ fromNodeId: 'n2' }, context)).membershipEpoch).toBe(0n);
    } finally {
      await repo.close();
      removeTempDir(dir);
    }
  });
});

/** The agreement calls of `client`, unchanged (a test replaces one to lose its messages). */
function passThrough(client: MembershipPeerClient): MembershipPeerClient {
  return {
    getMembership: (request, options) => client.getMembership(request, options),
    membershipPrepare: (request, options) => client.membershipPrepare(request, options),
    membershipAccept: (request, options) => client.membershipAccept(request, options),
    membershipCommit: (request, options) => client.membershipCommit(request, options),
  };
}

function track(cluster: TestCluster, channel: Channel): Channel {
  cluster.channels.push(channel);
  return channel;
}
