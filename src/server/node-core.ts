import type { Logger } from 'pino';
import type { BackupResponse, PeerServiceImplementation } from '../../gen/kvstore/internal/v1/peer.js';
import type { DigestForest } from '../cluster/digest-tree.js';
import { HybridLogicalClock } from '../cluster/hlc.js';
import type { Ring } from '../cluster/ring.js';
import type { NodeConfig } from '../config/schema.js';
import type { Clock } from '../platform/clock.js';
import type { BackgroundService } from '../platform/periodic.js';
import type { PeerConnector } from '../platform/peer-transport.js';
import { pRetryForever, type RetryForever } from '../platform/retry.js';
import { AntiEntropy } from '../replication/anti-entropy.js';
import { Coordinator } from '../replication/coordinator.js';
import { DeliveryLoop } from '../replication/delivery-loop.js';
import { HintLimits } from '../replication/hint-limits.js';
import { LiveMembership } from '../replication/live-membership.js';
import { PeerDirectory } from '../replication/peer-directory.js';
import { PeerLink } from '../replication/peer-link.js';
import { PeerProber } from '../replication/peer-prober.js';
import { ReadBatcher } from '../replication/read-batcher.js';
import { TombstoneCollector } from '../replication/tombstone-gc.js';
import { cancelChange, type ChangeRequest, decodeMembership, describeChange, encodeMembership, markDead, type MembershipState, proposeChange, reconcileMembership } from '../cluster/membership.js';
import { MembershipRefusedError } from '../replication/errors.js';
import type { FetchRangeRequest, PingResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { MembershipAcceptor, repositoryAcceptorStore } from '../replication/membership-acceptor.js';
import { MembershipProposer, membershipFetcher } from '../replication/membership-proposer.js';
import { Rng } from '../common/rng.js';
import type { Transfer } from '../cluster/transfer-plan.js';
import { MembershipChanges } from '../replication/membership-changes.js';
import { RangeStreamer, type RangeTransfer } from '../replication/range-streamer.js';
import { RateLimiter } from '../replication/rate-limiter.js';
import { randomInt } from 'node:crypto';
import { DataDirMismatchError, Repository, type StorageFaults } from '../storage/repository.js';
import { createPeerService } from './peer-service.js';

/** Room for the key and protobuf framing on top of the largest value a client may send. */
export const requestOverheadBytes = 64 * 1024;

/** Most a start waits for peers to tell their clock; a peer that is down is not waited for. */
const clockSeedWaitMsMax = 2_000;
/**
 * Records read per page when the hash trees are rebuilt after a placement change, each page under
 * the write lock: about 5 ms here at the measured replay rate (300,000 records in 547 ms). Larger pages hold
 * writes back longer each time; BENCHMARKS.md, "Adding a node, again", measured 10,000 and 2,500.
 */
export const forestRebuildPageRecords = 2_500;

/** What composeNodeCore needs besides the config: the seams. */
export interface NodeCoreSeams {
  readonly logger: Logger;
  /** Time and timers: SystemClock in a node, a simulated clock in the simulator. */
  readonly clock: Clock;
  /** Opens the transport to each peer: gRPC in a node, in memory in the simulator. */
  readonly connect: PeerConnector;
  /** How delivery retries: p-retry by default. */
  readonly retry?: RetryForever;
  /** Storage for the simulator (no fsync, commits on this thread); see RepositoryOptions.simulated. */
  readonly simulatedStorage?: boolean;
  /** Storage failures to inject (StorageFaults): the simulator, tests, the KVSTORE_TEST_STORAGE_FAULTS hook. */
  readonly storageFaults?: StorageFaults;
  /** Start even on a data dir restored from a backup older than the grace. */
  readonly allowStaleStart?: boolean;
  /** peerTls: a caller's identity comes from its certificate (peer-service.ts). */
  readonly identityFromCertificate?: boolean;
  /** Answers the peer Backup RPC; default: refused (the simulator takes no backups). */
  readonly backup?: () => Promise<BackupResponse>;
  /** Aborted when the node stops: the peer service's streams end. */
  readonly closing: AbortSignal;
  /** Jitter of the membership agreement's retries: seeded in the simulator; default random. */
  readonly rng?: { next(): number };
}

/** A membership change an operator asks for (ChangeMembership, kvctl member ...). */
export type MembershipCommand = ChangeRequest | { readonly kind: 'mark-dead'; readonly id: string } | { readonly kind: 'cancel' };

/** How often a node looks at the membership change in progress (drain barrier, streaming, the next step). */
const membershipChangePollMs = 500;

/** Most a membership change may take when the caller gives no deadline: every live member must answer. */
export const membershipChangeMsDefault = 30_000;

/**
 * The replication core of one node, without any server: storage, clock, ring, peer links,
 * delivery loops, coordinator, anti-entropy, tombstone GC, prober, log limits, and the replica
 * side (the peer service implementation, which a gRPC server or the simulated network serves).
 * Built by composeNodeCore, the one place that wires them: the real node (node.ts) and the
 * simulator (src/sim/) both use it, so the simulator runs exactly what a node runs.
 */
export interface NodeCore {
  readonly selfId: string;
  readonly repo: Repository;
  readonly hlc: HybridLogicalClock;
  /** The membership this node runs with now (persisted; src/cluster/membership.ts), its ring and hash trees. */
  readonly membership: LiveMembership;
  /** The current ring (membership.ring()). */
  ring(): Ring;
  /** The hash trees over the current ring (membership.forest()). */
  forest(): DigestForest;
  /** Links, delivery loops and log queues of the other members, in step with the membership. */
  readonly peers: PeerDirectory;
  /** Carries membership changes through their phases: streaming, the driver's steps, cleanup. */
  readonly changes: MembershipChanges;
  readonly coordinator: Coordinator;
  readonly antiEntropy: AntiEntropy;
  readonly tombstones: TombstoneCollector;
  readonly prober: PeerProber;
  readonly hintLimits: HintLimits;
  /** The replica side: what this node answers its peers. */
  readonly peerService: PeerServiceImplementation;
  /** The largest peer message (request) this node sends or accepts. */
  readonly peerMessageBytes: number;
  /**
   * Observes every reachable peer's clock reading (Ping) before this node issues any version: a
   * node on an empty, wiped or restored data dir does not know the versions it issued before, so
   * its clock starts above every peer's and never issues one of them again.
   */
  seedClockFromPeers(): Promise<void>;
  /**
   * Agrees with every live member on `command` as the next membership epoch and answers the
   * committed state. Only mark-dead is carried out today: the changes that move data are refused
   * (MembershipRefusedError) until streaming exists (docs/membership.md §10).
   */
  changeMembership(command: MembershipCommand, deadlineMs?: number): Promise<MembershipState>;
  /** Starts every background service (log limits enforced once first). */
  start(): void;
  /** Stops the coordinator and every background service, closes the links and the repository. */
  stop(): Promise<void>;
  /** Drops everything without a clean stop (a simulated crash): timers stop, nothing is flushed. */
  abandon(): Promise<void>;
}

/** Builds a node's replication core from its config and the seams (see NodeCore). */
export async function composeNodeCore(config: NodeConfig, seams: NodeCoreSeams): Promise<NodeCore> {
  const { logger, clock: time } = seams;
  const selfId = config.nodeId;
  const members = config.cluster.members.length > 0 ? config.cluster.members : [{ id: selfId, peer: config.peerListen }];
  const repo = Repository.open({ dataDir: config.dataDir, nodeId: selfId, peers: config.cluster.join.length > 0 ? [] : members.filter((m) => m.id !== selfId).map((p) => p.id), clock: time, simulated: seams.simulatedStorage === true, ...(seams.storageFaults === undefined ? {} : { storageFaults: seams.storageFaults }) });
  try {
    const wallClock = () => time.wallMs();
    const hlc = new HybridLogicalClock(selfId, wallClock, repo.clockReading(), config.clock.maxDriftMs);
    // Versions observed from peers raise the persisted high-water mark too.
    repo.persistClockWith(() => hlc.reading());
    repo.onVersionCollision(({ key, stored, received }) =>
      logger.error({ key: key.toString('base64'), stored: stored.toString('hex'), received: received.toString('hex') }, 'two different records with the same version (must never happen): the byte-wise larger one is kept'),
    );
    const restoredAt = repo.restoredFromBackupAtMs();
    if (restoredAt !== undefined) {
      const ageMs = wallClock() - restoredAt;
      if (ageMs > config.tombstones.graceSeconds * 1000 && seams.allowStaleStart !== true) {
        throw new DataDirMismatchError(
          `${config.dataDir} was restored from a backup taken ${Math.round(ageMs / 1000)} s ago, longer ago than tombstones.graceSeconds (${config.tombstones.graceSeconds} s): ` +
            `it may hold values whose deletes the cluster has purged since. Move ${config.dataDir} aside (the backup is kept) and start the node on an empty one (anti-entropy refills it), ` +
            'or pass --allow-stale-start if no node purged anything since (e.g. the whole cluster was down)',
        );
      }
      await repo.clearRestoredMark();
    }
    // The membership as cluster state (docs/membership.md): seeded from cluster.members once,
    // persisted with an epoch, changed only by agreement.
    const storedMembership = repo.membershipBytes();
    let stored: MembershipState | undefined;
    try {
      stored = storedMembership === undefined ? undefined : decodeMembership(storedMembership);
    } catch (err) {
      throw new DataDirMismatchError(`${config.dataDir}: ${(err as Error).message}; the data dir was not written by this version of kvstore, or is damaged`);
    }
    // A joining node takes the cluster's membership when a member adds it (§1.2); until then it
    // is unjoined (epoch 0, not persisted). cluster.join is ignored once it has a stored state.
    const joining = config.cluster.join.length > 0;
    let membership: MembershipState;
    if (joining) {
      membership = stored ?? LiveMembership.unjoined(selfId, config.peerListen);
      if (stored === undefined) logger.warn(`${selfId} is not a member yet: add it with \`kvctl member add ${selfId} <its peer host:port>\` on a member of the cluster (cluster.join: ${config.cluster.join.join(', ')})`);
    } else {
      const reconciled = reconcileMembership(stored, members);
      membership = reconciled.state;
      if (storedMembership === undefined) await repo.storeMembershipBytes(encodeMembership(membership));
      if (reconciled.ignored !== undefined) logger.warn({ epoch: membership.epoch }, reconciled.ignored);
    }
    const replicationFactor = config.cluster.replicationFactor;
    const live = new LiveMembership(selfId, membership, { replicationFactor, vnodesPerMember: config.cluster.vnodesPerMember }, {
      persist: (state) => repo.storeMembershipBytes(encodeMembership(state)),
      rebuild: (forest, onSwap) => repo.rebuildObserver((key, keyHash, oldHeader, newHeader) => forest.apply(keyHash, key, oldHeader, newHeader), onSwap, forestRebuildPageRecords),
    });
    const observeRecord = (key: Buffer, keyHash: number, oldHeader: Buffer | undefined, newHeader: Buffer | undefined) => live.forest().apply(keyHash, key, oldHeader, newHeader);
    repo.observeRecords(observeRecord);
    const peerMessageBytes = config.replication.batchMaxBytes + config.limits.maxValueBytes + requestOverheadBytes;
    // Log entries never outlive the tombstone grace: an older one may carry a write whose
    // delete was purged (tombstone-gc.ts). The loops check it too, before the limits first run.
    const graceAge = config.tombstones.graceSeconds;
    const entryAgeSeconds = config.hints.maxAgeSeconds === 0 ? graceAge : Math.min(config.hints.maxAgeSeconds, graceAge);
    const retry = seams.retry ?? pRetryForever;
    const peerCallMs = config.timeouts.peerCallMs;
    const dialOverrides = new Map(config.cluster.members.map((m) => [m.id, m.peer]));
    const peers = new PeerDirectory(
      selfId,
      {
        // The configured address of a member wins over the agreed one (test clusters dial each
        // member through a proxy per link; behind NAT a member is reached at another address).
        dialAddress: (id, agreed) => dialOverrides.get(id) ?? agreed,
        link: (id, address) => new PeerLink(id, address, peerMessageBytes, seams.connect(id, address, peerMessageBytes), time),
        loop: (link) => new DeliveryLoop(link, repo.hints, { selfId, ...config.replication, peerCallMs, entryAgeMsMax: entryAgeSeconds * 1000 }, logger, time, retry),
        reader: (link) => new ReadBatcher(link, selfId, peerCallMs, time),
      },
      repo.hints,
      logger,
    );
    await peers.sync(membership);
    live.onChange((state) => peers.sync(state));
    const antiEntropy = new AntiEntropy(
      {
        selfId,
        replicationFactor,
        intervalSeconds: config.antiEntropy.intervalSeconds,
        maxRecordsPerSecond: config.antiEntropy.maxRecordsPerSecond,
        peerCallMs,
        batchMaxBytes: config.replication.batchMaxBytes,
      },
      live,
      repo,
      hlc,
      peers,
      logger,
      time,
    );
    const coordinator = new Coordinator({ selfId, replicationFactor, peerCallMs, graceSeconds: config.tombstones.graceSeconds, assertServing: () => live.assertCoordinating() }, live, repo, hlc, peers, logger, time);
    const prober = new PeerProber(selfId, () => peers.everyLink(), config.replication.probeIntervalMs, peerCallMs, logger, time, (link, answer) => {
      // A peer at a newer epoch: a change was committed while this node missed its Commit.
      if (Number(answer.membershipEpoch) > live.epoch) void catchUpFrom(link.id, Number(answer.membershipEpoch));
    });
    const hintLimits = new HintLimits(repo.hints, { maxAgeSeconds: entryAgeSeconds, maxBytesPerPeer: config.hints.maxBytesPerPeer }, logger, time);
    const tombstones = new TombstoneCollector({ selfId, replicationFactor, graceSeconds: config.tombstones.graceSeconds, peerCallMs }, live, repo, peers, logger, time);
    const deadAfterMs = config.membership.deadAfterSeconds * 1000;
    // A node being added is dialled before it is a member (the proposer must reach its acceptor).
    const joinerLinks = new Map<string, PeerLink>();
    const clientOf = (id: string) => (peers.link(id) ?? joinerLinks.get(id))?.client;
    const acceptor = new MembershipAcceptor({
      store: repositoryAcceptorStore(repo),
      committed: live,
      fetchState: (from) => fetchState(from),
      replicationFactor,
      // §2.5: a member declared dead must really be out of reach, from here too.
      checkLocally: (committed, next) => {
        for (const m of next.members) {
          if (m.dead !== true || committed.members.find((c) => c.id === m.id)?.dead === true) continue;
          if (m.id === selfId) return `${selfId} is running: it is not dead`;
          const link = peers.link(m.id);
          // Monotonic: a wall clock set back (or forward) must not make a member look recently reached (or long gone).
          const contact = link?.lastContactMonotonicMs;
          const agoMs = contact === undefined ? Infinity : time.monotonicMs() - contact;
          if (agoMs < deadAfterMs) {
            return `${selfId} reached ${m.id} ${Math.round(agoMs / 1000)} s ago (membership.deadAfterSeconds is ${config.membership.deadAfterSeconds}): ${m.id} is not dead`;
          }
        }
        return undefined;
      },
    });
    const fetchState = membershipFetcher(selfId, clientOf, time, peerCallMs);
    /** Adopts `from`'s committed membership if it is newer than ours (a failure is logged: the next ping retries). */
    const catchUpFrom = async (from: string, epoch: number) => {
      try {
        const state = await fetchState(from);
        if (await acceptor.catchUp(state)) logger.warn({ epoch: state.epoch, from }, `membership epoch ${state.epoch} learned from ${from} (this node was at an older one)`);
      } catch (err) {
        logger.warn({ from, epoch, err: (err as Error).message }, `could not fetch membership epoch ${epoch} from ${from}`);
      }
    };
    const rng = seams.rng ?? new Rng(randomInt(2 ** 31));
    const proposer = new MembershipProposer({ selfId, acceptor, clientOf, clock: time, rng, peerCallMs, replicationFactor });
    const proposeLogged = async (build: (committed: MembershipState) => { state: MembershipState } | { refusal: string }, deadlineMs: number, command: MembershipCommand) => {
      const committed = await proposer.propose(build, deadlineMs);
      logger.warn({ epoch: committed.epoch }, `membership epoch ${committed.epoch} committed: ${committed.change === undefined ? command.kind : describeChange(committed, committed.change)}`);
      return committed;
    };
    const streamingThrottle = config.streaming.maxBytesPerSecond > 0 ? new RateLimiter(config.streaming.maxBytesPerSecond, time) : undefined;
    const changes = new MembershipChanges({
      selfId,
      live,
      peers,
      repo,
      proposer,
      clock: time,
      logger,
      vnodesPerMember: config.cluster.vnodesPerMember,
      peerCallMs,
      pollMs: membershipChangePollMs,
      stepMs: membershipChangeMsDefault,
      receiver: (changeId, _epoch, transfers) => {
        const streamer = new RangeStreamer({
          selfId,
          changeId,
          epoch: () => live.epoch,
          transfers: transfers.map((t) => rangeTransferOf(live, t, replicationFactor)),
          clientOf,
          repo,
          hlc,
          clock: time,
          rng,
          settings: { ...config.streaming, peerCallMs },
          logger,
          isDead: (id) => live.member(id)?.dead === true,
        });
        return {
          start: () => streamer.start(),
          stop: () => streamer.stop(),
          progress: () => {
            const p = streamer.progress();
            return { done: p.transfers.filter((t) => t.done).length, total: p.transfers.length, keys: p.keys, bytes: p.bytes, complete: p.complete };
          },
        };
      },
    });
    // FetchRange (§5.1): answered only for the change in progress, by an old owner of the range.
    const checkFetch = (request: FetchRangeRequest): string | undefined => {
      const state = live.current();
      if (state.change === undefined || state.change.id !== Number(request.changeId)) return `no change ${request.changeId} in progress here (this node is at membership epoch ${state.epoch})`;
      if (Math.abs(Number(request.epoch) - state.epoch) > 1) return `the asker is at membership epoch ${request.epoch}, this node at ${state.epoch}: one of the two must catch up first`;
      if (!live.view().oldRing.preferenceListOfHash(request.endInclusive, replicationFactor).includes(selfId)) return `${selfId} does not own the range (${request.startExclusive}, ${request.endInclusive}] in the old ring`;
      return undefined;
    };
    const peerService = createPeerService({
      selfId,
      repo,
      clock: hlc,
      members: {
        // An unjoined node knows no members yet: the proposer adding it must reach its acceptor.
        has: (id) => live.isUnjoined || live.isLive(id),
        // A node being added may ask too: an unjoined node took the cluster's state from the first
        // Prepare of its add, and if that attempt failed and another epoch was chosen meanwhile, the
        // next attempt must let it fetch the newer state (it is in no member list yet).
        knows: (id) => live.member(id) !== undefined || joinerLinks.has(id),
        [Symbol.iterator]: () => live.activeMembers().filter((m) => m.dead !== true).map((m) => m.id)[Symbol.iterator](),
      },
      agreement: acceptor,
      membershipEpoch: () => live.epoch,
      drainedEpoch: () => changes.drainedEpoch(),
      logEntries: () => repo.hints.peers().reduce((sum, peer) => sum + repo.hints.stats(peer).entries, 0),
      streamProgress: () => changes.progress(),
      checkFetch,
      ...(streamingThrottle === undefined ? {} : { sendThrottle: streamingThrottle }),
      identityFromCertificate: seams.identityFromCertificate === true,
      membership: live,
      assertServing: () => live.assertServing(),
      replicationFactor,
      vnodesPerMember: config.cluster.vnodesPerMember,
      maxKeyBytes: config.limits.maxKeyBytes,
      graceSeconds: config.tombstones.graceSeconds,
      wallClock,
      backup: seams.backup ?? (() => Promise.reject(new Error('backups are not taken here'))),
      closing: seams.closing,
    });
    const services: BackgroundService[] = [peers, prober, antiEntropy, hintLimits, tombstones, changes];
    const stopServices = async () => {
      await prober.stop();
      await hintLimits.stop();
      await tombstones.stop();
      await antiEntropy.stop();
      await changes.stop();
      await peers.stop();
    };
    return {
      selfId,
      repo,
      hlc,
      membership: live,
      ring: () => live.ring(),
      forest: () => live.forest(),
      peers,
      changes,
      coordinator,
      antiEntropy,
      tombstones,
      prober,
      hintLimits,
      peerService,
      peerMessageBytes,
      async changeMembership(command, deadlineMs = membershipChangeMsDefault) {
        const build = (committed: MembershipState): { state: MembershipState } | { refusal: string } => {
          switch (command.kind) {
            case 'mark-dead':
              return markDead(committed, command.id);
            case 'add':
            case 'remove':
            case 'replace':
              return proposeChange(committed, command, replicationFactor);
            case 'cancel':
              return cancelChange(committed);
          }
        };
        // Refused here at once when this node's own state already refuses it (a change in progress, ...).
        const local = build(live.current());
        if ('refusal' in local) throw new MembershipRefusedError(local.refusal);
        // §2.5 folded into remove and replace: a member this node has not reached for
        // membership.deadAfterSeconds is first declared dead, by agreement (every live member
        // checks its own contact, so one that still reaches it refuses), since a member that
        // does not answer could never agree to its own removal.
        const outgoing = command.kind === 'remove' ? command.id : command.kind === 'replace' ? command.oldId : undefined;
        const member = outgoing === undefined ? undefined : live.member(outgoing);
        if (member !== undefined && member.dead !== true && member.id !== selfId) {
          const contact = peers.link(member.id)?.lastContactMonotonicMs;
          if (contact === undefined || time.monotonicMs() - contact >= deadAfterMs) await proposeLogged((committed) => markDead(committed, member.id), deadlineMs, { kind: 'mark-dead', id: member.id });
        }
        if (command.kind === 'add' || command.kind === 'replace') {
          // The new node must be up (started with cluster.join) and be who it is said to be.
          const newId = command.kind === 'add' ? command.id : command.newId;
          const link = new PeerLink(newId, command.peer, peerMessageBytes, seams.connect(newId, command.peer, peerMessageBytes), time);
          try {
            let answer: PingResponse;
            try {
              answer = await link.client.ping({ fromNodeId: selfId }, { signal: time.timeoutSignal(peerCallMs) });
            } catch (err) {
              throw new MembershipRefusedError(`${newId} did not answer at ${command.peer} (${(err as Error).message}): start it with cluster.join first`);
            }
            if (answer.nodeId !== newId) throw new MembershipRefusedError(`${command.peer} answers as node "${answer.nodeId}", not "${newId}"`);
            // A node placing keys differently would read and write other replicas than everyone else.
            const theirs = { replicationFactor: answer.replicationFactor, vnodesPerMember: answer.vnodesPerMember };
            const ours = { replicationFactor, vnodesPerMember: config.cluster.vnodesPerMember };
            for (const setting of ['replicationFactor', 'vnodesPerMember'] as const) {
              if (theirs[setting] !== 0 && theirs[setting] !== ours[setting]) {
                throw new MembershipRefusedError(`${newId} is configured with cluster.${setting} ${theirs[setting]}, this cluster with ${ours[setting]}: start it with the same cluster.replicationFactor and cluster.vnodesPerMember as the members`);
              }
            }
            joinerLinks.set(newId, link);
            return await proposeLogged(build, deadlineMs, command);
          } finally {
            joinerLinks.delete(newId);
            link.close();
          }
        }
        return proposeLogged(build, deadlineMs, command);
      },
      async seedClockFromPeers() {
        const links = peers.links();
        if (links.length === 0) return;
        const timeoutMs = Math.min(peerCallMs, clockSeedWaitMsMax);
        const answers = await Promise.allSettled(links.map((l) => l.client.ping({ fromNodeId: selfId }, { signal: time.timeoutSignal(timeoutMs) })));
        let seeded = 0;
        for (const a of answers) {
          if (a.status !== 'fulfilled' || a.value.clockWallMs === 0n) continue;
          if (hlc.observe({ wallMs: Number(a.value.clockWallMs), counter: a.value.clockCounter, nodeId: a.value.nodeId })) seeded++;
        }
        if (seeded === 0) logger.warn("no peer answered at start: the clock starts from this node's own high-water mark only");
        // §2.4: a node that was down while the membership changed learns the current epoch
        // before it serves (declared dead meanwhile, it then serves nothing: assertServing).
        let newest: { id: string; epoch: number } | undefined;
        answers.forEach((a, i) => {
          const epoch = a.status === 'fulfilled' ? Number(a.value.membershipEpoch) : 0;
          if (epoch > (newest?.epoch ?? live.epoch)) newest = { id: links[i]!.id, epoch };
        });
        if (newest !== undefined) await catchUpFrom(newest.id, newest.epoch);
      },
      start() {
        // The limits run once before any entry can be sent: nothing past them goes out at start-up.
        hintLimits.enforce();
        for (const service of services) service.start();
      },
      async stop() {
        coordinator.close();
        await stopServices();
        peers.close();
        await repo.close();
      },
      async abandon() {
        coordinator.close();
        peers.close();
        // Not waited for: a crashed process's rounds in progress never finish (its timers are gone).
        void stopServices().catch(() => {});
        await repo.abandon();
      },
    };
  } catch (err) {
    await repo.close();
    throw err;
  }
}

/**
 * A transfer of the plan as the streamer takes it: named by its range (stable across restarts),
 * the member it displaces as primary unless that one is declared dead, the other old owners
 * that are not dead as fallbacks.
 */
function rangeTransferOf(live: LiveMembership, t: Transfer, replicationFactor: number): RangeTransfer {
  const view = live.view();
  const dead = (id: string) => live.member(id)?.dead === true;
  const before = view.oldRing.preferenceListOfHash(t.range.endInclusive, replicationFactor);
  const after = view.newRing.preferenceListOfHash(t.range.endInclusive, replicationFactor);
  const displaced = before.find((id) => !after.includes(id));
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  return {
    id: `${hex(t.range.startExclusive)}-${hex(t.range.endInclusive)}`,
    startExclusive: t.range.startExclusive,
    endInclusive: t.range.endInclusive,
    primary: displaced !== undefined && !dead(displaced) ? displaced : undefined,
    fallbacks: before.filter((id) => id !== displaced && !dead(id)),
  };
}
