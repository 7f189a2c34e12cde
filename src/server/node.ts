import { createChannel, createClient, createServer, type Server } from 'nice-grpc';
import { HealthDefinition, HealthServiceImpl, HealthState } from 'nice-grpc-server-health';
import type { Logger } from 'pino';
import { type BackupResponse, PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { SystemClock } from '../platform/clock.js';
import { grpcPeerConnector, peerChannelOptions } from '../platform/peer-transport.js';
import { probeJoinAddresses, reportJoinProbe } from './join-probe.js';
import { composeNodeCore, type MembershipCommand, type NodeCore, requestOverheadBytes } from './node-core.js';
import { type BackupStatus, type ChangeMembershipRequest, type ChangeMembershipResponse, KVStoreDefinition, MemberState as MemberStateMessage, memberStateFromJSON, type StatusResponse } from '../../gen/kvstore/v1/kvstore.js';
import { describeChange, type MemberState } from '../cluster/membership.js';
import { HybridLogicalClock } from '../cluster/hlc.js';
import { Ring } from '../cluster/ring.js';
import type { NodeConfig } from '../config/schema.js';
import { backupLocal, backupPeer, type NodeBackup, pruneBackups } from '../replication/backups.js';
import { DigestForest } from '../cluster/digest-tree.js';
import { AntiEntropy } from '../replication/anti-entropy.js';
import { Coordinator } from '../replication/coordinator.js';
import { HintLimits } from '../replication/hint-limits.js';
import { testClockOffsetMs, testStorageFaults } from '../common/test-hooks.js';
import { unhandledRejections } from '../common/process-policy.js';
import { TombstoneCollector } from '../replication/tombstone-gc.js';
import { DataDirMismatchError } from '../storage/repository.js';
import type { PeerDirectory } from '../replication/peer-directory.js';
import { InvalidRequestError } from '../replication/errors.js';
import { PeerLink, peerReceiveBytesMax } from '../replication/peer-link.js';
import { PeerProber } from '../replication/peer-prober.js';
import { Repository } from '../storage/repository.js';
import { errorMiddleware } from './error-middleware.js';
import { authMiddleware } from './auth/auth-middleware.js';
import { certificateCnFromGrpcMetadata, certificateCnFromMetadata, clientCertificateInterceptor } from './auth/client-certificate.js';
import { Authenticator } from './auth/authenticator.js';
import { metricsAccess } from './auth/metrics-access.js';
import { securityWarnings } from './security-warnings.js';
import { createKvService } from './kv-service.js';
import { type DirectUnaryHandler, directUnaryInterceptor, firstMetadataValue } from './direct-unary.js';
import { InFlightBudget, operationOverheadBytes } from './in-flight-budget.js';
import { AdminJobs } from './admin-jobs.js';
import { connectionLimitOptions } from './connection-limits.js';
import { RunningOperations, runningOperationsMaxDefault } from './running-operations.js';
import { OperationStreamStats } from './operation-stream.js';
import { createPeerService } from './peer-service.js';
import { malformedRequestMiddleware, withMalformedRequestsMarked } from './malformed-requests.js';
import { ownPeerCertificateCheck, peerChannelCredentials, peerChannelCredentialsAnyNode, peerIdentityInterceptor, peerTlsChannelOptions, ReloadingTls, serverCredentials } from './tls-credentials.js';
import { LateRequestStats } from './late-requests.js';
import { streamsClosingSignal } from './stream-messages.js';
import { type MetricsServer, type NodeCounters, NodeMetrics, startMetricsServer } from './metrics.js';

/**
 * Largest public request whatever limits.maxValueBytes says: room for a Batch of small
 * operations (the SDK sends at most 1 MiB of keys and values per Batch).
 */
const publicRequestBytesFloor = 4 * 1024 * 1024;
/**
 * Largest answer the public port sends: a Batch's answers count against the in-flight budget
 * and an operation that finds it full is not run, so one Batch answer holds at most the budget
 * plus what the operations already running return (running-operations.ts). An OperationStream
 * message carries less (its stream's bound). Everything else is one value or smaller.
 */
function publicAnswerBytesMax(limits: NodeConfig['limits']): number {
  return limits.maxInFlightBytes + runningOperationsMaxDefault * (limits.maxValueBytes + limits.maxKeyBytes + operationOverheadBytes) + requestOverheadBytes;
}
/** How long a graceful stop waits for in-flight calls before cutting them off. */
export const shutdownGraceMs = 10_000;
/** Server version reported by Status. */
export const serverVersion = '0.1.0';

/**
 * One kvstore node: opens its LMDB repository, builds the ring and the peer links, runs one
 * replication delivery loop per peer, and serves the public API on `listen` and the internal API
 * on `peerListen` (only when the cluster has other members).
 */
export class KvNode {
  private readonly startedAtMs = Date.now();

  private constructor(
    readonly config: NodeConfig,
    readonly repo: Repository,
    readonly coordinator: Coordinator,
    private readonly peers: PeerDirectory,
    private readonly prober: PeerProber,
    readonly antiEntropy: AntiEntropy,
    private readonly hintLimits: HintLimits,
    private readonly tombstones: TombstoneCollector,
    /** The standard health service's state: healthy while serving, unhealthy once stopping. */
    private readonly health: HealthState,
    private readonly publicServer: Server,
    /** Aborted on stop: clients' OperationStreams end instead of holding the public server's shutdown. */
    private readonly operationStreamsClosing: AbortController,
    private readonly streamStats: OperationStreamStats,
    private readonly budget: InFlightBudget,
    private readonly lateRequestStats: LateRequestStats,
    private readonly peerServer: Server | undefined,
    /** Aborted on stop: peers' long-lived streams end instead of holding the peer server's shutdown. */
    private readonly peerStreamsClosing: AbortController,
    /** Bound public address (host:port with the real port when configured with port 0). */
    readonly listenAddress: string,
    readonly peerAddress: string | undefined,
    private readonly logger: Logger,
    /** The Prometheus endpoint, when `metricsListen` is configured. */
    private readonly metrics: MetricsServer | undefined,
    /** Certificates followed for reloads (tls, peerTls): stop following them at stop. */
    private readonly tlsSources: readonly ReloadingTls[] = [],
  ) {}

  /** Security problems of this node's setup (security-warnings.ts), logged at start and answered in Status. */
  private securityWarnings: readonly string[] = [];
  /** The users file, when `auth` is set (stops following SIGHUP at stop). */
  private authenticator: Authenticator | undefined;
  /** Set by stop: health stays NOT_SERVING whatever the membership does meanwhile. */
  stopping = false;
  /** The replication core (set by start): stopped after the servers. */
  private core!: NodeCore;
  /** The slots of Batch and OperationStream operations (set by start). */
  private runningOperations!: RunningOperations;
  /** Takes this node's backup and prunes old ones (set by start). */
  private backupSelf!: () => Promise<NodeBackup>;
  /** The metrics /metrics serves, when `metricsListen` is configured (set by start). */
  private nodeMetrics: NodeMetrics | undefined;

  /**
   * @param allowStaleStart start even though this node was out of the cluster longer than the
   *   tombstone grace (only right after a whole-cluster outage, when no node purged anything).
   */
  static async start(config: NodeConfig, logger: Logger, allowStaleStart = false): Promise<KvNode> {
    const selfId = config.nodeId;
    const members = config.cluster.members.length > 0 ? config.cluster.members : [{ id: selfId, peer: config.peerListen }];
    const peers = members.filter((m) => m.id !== selfId);
    let metrics: MetricsServer | undefined;
    const tlsSources: ReloadingTls[] = [];
    let core: NodeCore | undefined;
    try {
      // Certificates that do not load stop the start (TlsConfigError names the file).
      const publicTls = config.tls === undefined ? undefined : new ReloadingTls({ certFile: config.tls.certFile, keyFile: config.tls.keyFile, caFile: config.tls.clientCaFile }, 'tls', logger);
      if (publicTls !== undefined) tlsSources.push(publicTls);
      const peerTls = config.peerTls === undefined || (peers.length === 0 && config.cluster.join.length === 0) ? undefined : new ReloadingTls(config.peerTls, 'peerTls', logger, ownPeerCertificateCheck(selfId, config.peerTls.certFile));
      if (peerTls !== undefined) tlsSources.push(peerTls);
      // The process's clock (shifted by the KVSTORE_TEST_CLOCK_OFFSET_MS hook when set).
      const time = new SystemClock(testClockOffsetMs());
      // Injected storage failures (the KVSTORE_TEST_STORAGE_FAULTS hook), said loudly: never in production.
      const storageFaults = testStorageFaults();
      if (storageFaults !== undefined) {
        logger.warn({ hook: 'KVSTORE_TEST_STORAGE_FAULTS', jobRate: storageFaults.jobRate, commitRate: storageFaults.commitRate, seed: storageFaults.seed }, 'test hook: failing storage writes on purpose');
      }
      const peerStreamsClosing = streamsClosingSignal();
      // Set below, once the admin-job slot exists: the peer Backup RPC takes the same slot.
      let backupForPeer: (() => Promise<BackupResponse>) | undefined;
      core = await composeNodeCore(config, {
        logger,
        clock: time,
        connect: grpcPeerConnector(peerTls === undefined ? undefined : (id) => ({ credentials: peerChannelCredentials(peerTls, id), channelOptions: peerTlsChannelOptions(id) })),
        allowStaleStart,
        identityFromCertificate: peerTls !== undefined,
        backup: () => backupForPeer!(),
        closing: peerStreamsClosing.signal,
        ...(storageFaults === undefined ? {} : { storageFaults }),
      });
      const { repo, hlc: clock, peers: peerDirectory, coordinator, antiEntropy, tombstones, prober, hintLimits, peerMessageBytes } = core;
      const wallClock = () => time.wallMs();
      const health = HealthState();
      health.setStatus('unhealthy');

      const backupSelf = async (): Promise<NodeBackup> => {
        const backup = await backupLocal(repo, selfId, config.backupDir);
        const deleted = pruneBackups(config.backupDir, selfId, config.backupKeep);
        if (deleted.length > 0) logger.info({ deleted, backupKeep: config.backupKeep }, `deleted ${deleted.length} old backup(s) beyond backupKeep`);
        return backup;
      };
      let node: KvNode | undefined;
      const operationStreamsClosing = streamsClosingSignal();
      const streamStats = new OperationStreamStats();
      const lateRequestStats = new LateRequestStats();
      const budget = new InFlightBudget(config.limits.maxInFlightBytes);
      // A users file that does not load stops the start (UsersFileError, exit 2).
      const authenticator = config.auth === undefined ? undefined : new Authenticator(config.auth.usersFile, logger);
      const adminJobs = new AdminJobs(selfId);
      const runningOperations = new RunningOperations();
      // Only with metricsListen: the histograms' observers (middleware, delivery, commits,
      // anti-entropy) cost nothing on a node nobody scrapes. Scrapes read the node through `node`.
      const nodeMetrics = config.metricsListen === undefined ? undefined : new NodeMetrics(() => ({ status: node!.status(), counters: node!.metricsCounters() }), peers.map((p) => p.id));
      if (nodeMetrics !== undefined) {
        peerDirectory.onLoop((loop) => loop.observeDeliveries((batch) => nodeMetrics.observeDelivery(loop.peerId, batch)));
        repo.onCommit((commit) => nodeMetrics.observeCommit(commit));
        antiEntropy.onExchange((result) => nodeMetrics.observeExchange(result));
      }
      const { service: kvService, unary: kvUnary } = createKvService({
          coordinator,
          limits: config.limits,
          defaultRead: config.consistency.read,
          defaultWrite: config.consistency.write,
          requestMs: config.timeouts.requestMs,
          closing: operationStreamsClosing.signal,
          streamStats,
          lateRequestToleranceMs: config.timeouts.lateRequestToleranceMs,
          lateRequestStats,
          wallClock,
          budget,
          running: runningOperations,
          logger,
          ...(nodeMetrics === undefined ? {} : { observeOperation: (rpc, operation, code, seconds) => nodeMetrics.observeOperation(rpc, operation, code, seconds) }),
          status: () => node!.status(),
          changeMembership: (request) => node!.changeMembership(request),
          backup: (allNodes) => adminJobs.run('Backup', () => node!.backup(allNodes)),
          verify: () => adminJobs.run('Verify', async () => {
            const ranges = await antiEntropy.verify();
            return { ranges, differingRanges: ranges.filter((r) => !r.agree).length };
          }),
          repair: () => adminJobs.run('Repair', async () => ({
            peers: (await antiEntropy.repairAll()).map((r) => ({
              nodeId: r.peer,
              rangesCompared: r.rangesCompared,
              rangesDiffering: r.rangesDiffering,
              recordsPulled: BigInt(r.pulled),
              recordsPushed: BigInt(r.pushed),
              error: r.error ?? '',
              bytesTransferred: BigInt(r.bytes),
              durationMs: r.durationMs,
            })),
          })),
        });
      // Only the KVStore service authenticates its callers: the health service stays open.
      // With a client CA, a verified client certificate's subject CN names a user (client-certificate.ts).
      const certificateUsers = authenticator !== undefined && config.tls?.clientCaFile !== undefined;
      // Put, Get and Delete are answered on grpc-js directly (direct-unary.ts), the rest through nice-grpc.
      const directUnary = directUnaryInterceptor({
        methods: new Map<string, DirectUnaryHandler>([
          [`/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.put.name}`, kvUnary.put],
          [`/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.get.name}`, kvUnary.get],
          [`/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.delete.name}`, kvUnary.delete],
        ]),
        authenticate: authenticator === undefined ? undefined : (metadata) => {
          const header = firstMetadataValue(metadata, 'authorization');
          return authenticator.authenticate(typeof header === 'string' ? header : undefined, certificateUsers ? certificateCnFromGrpcMetadata(metadata) : undefined);
        },
        metrics: nodeMetrics?.grpc,
        logger,
      });
      // The metrics middleware goes outside errorMiddleware: it sees the status codes sent.
      const publicServer = withGrpcMetrics(createServer({
        ...connectionLimitOptions(config.connections),
        'grpc.max_receive_message_length': Math.max(publicRequestBytesFloor, config.limits.maxValueBytes + config.limits.maxKeyBytes + requestOverheadBytes),
        'grpc.max_send_message_length': publicAnswerBytesMax(config.limits),
        interceptors: [directUnary],
      }), nodeMetrics).use(errorMiddleware(logger));
      // Malformed protobuf answers INVALID_ARGUMENT, after the credentials (malformed-requests.ts).
      const kvDefinition = withMalformedRequestsMarked(KVStoreDefinition);
      if (authenticator === undefined) publicServer.with(malformedRequestMiddleware()).add(kvDefinition, kvService);
      else publicServer.with(authMiddleware(authenticator, certificateUsers ? certificateCnFromMetadata : undefined)).with(malformedRequestMiddleware()).add(kvDefinition, kvService);
      publicServer.add(HealthDefinition, HealthServiceImpl(health));

      backupForPeer = () => adminJobs.run('Backup', async () => toPeerBackup(await backupSelf()));
      let peerServer: Server | undefined;
      let peerAddress: string | undefined;
      // A joining node serves its peer port from the start: the member adding it calls there.
      if (peers.length > 0 || config.cluster.join.length > 0) {
        // Every answer is bounded (peer-service.ts), within what a peer link accepts.
        peerServer = withGrpcMetrics(createServer({
          ...connectionLimitOptions(config.connections),
          'grpc.max_receive_message_length': peerMessageBytes,
          'grpc.max_send_message_length': peerReceiveBytesMax(peerMessageBytes),
        }), nodeMetrics).use(
          errorMiddleware(logger),
        );
        peerServer.with(malformedRequestMiddleware()).add(
          withMalformedRequestsMarked(PeerServiceDefinition),
          core.peerService,
        );
        const peerPort = await peerServer.listen(config.peerListen, peerTls === undefined ? undefined : serverCredentials(peerTls, [peerIdentityInterceptor]));
        peerAddress = withPort(config.peerListen, peerPort);
      }
      const port = await publicServer.listen(config.listen, publicTls === undefined ? undefined : serverCredentials(publicTls, certificateUsers ? [clientCertificateInterceptor] : []));
      const listenAddress = withPort(config.listen, port);
      if (config.metricsListen !== undefined) {
        // Scrapes read the node through `node`, set just below; one arriving before answers 500.
        const access = authenticator !== undefined && config.auth?.metrics === 'token' ? metricsAccess(authenticator) : undefined;
        // With `tls`, /metrics speaks HTTPS with the public port's certificate.
        metrics = await startMetricsServer(config.metricsListen, () => nodeMetrics!.render(), access, publicTls);
      }
      // A node on an empty, wiped or restored data dir does not know the versions it issued
      // before: its clock starts above every peer's, so it never issues one of them again.
      await core.seedClockFromPeers();
      node = new KvNode(config, repo, coordinator, peerDirectory, prober, antiEntropy, hintLimits, tombstones, health, publicServer, operationStreamsClosing, streamStats, budget, lateRequestStats, peerServer, peerStreamsClosing, listenAddress, peerAddress, logger, metrics, tlsSources);
      node.authenticator = authenticator;
      node.backupSelf = backupSelf;
      node.core = core;
      node.runningOperations = runningOperations;
      node.nodeMetrics = nodeMetrics;
      const configured = config as { tls?: unknown; peerTls?: unknown };
      node.securityWarnings = securityWarnings({
        listen: listenAddress,
        publicTls: configured.tls !== undefined,
        auth: authenticator !== undefined,
        ...(peerAddress === undefined ? {} : { peerListen: peerAddress }),
        peerTls: configured.peerTls !== undefined,
        ...(metrics === undefined ? {} : { metricsListen: metrics.address }),
        metricsTls: publicTls !== undefined,
        metricsAuth: authenticator !== undefined && config.auth?.metrics === 'token',
      });
      for (const warning of node.securityWarnings) logger.warn({ security: true }, `INSECURE: ${warning}`);
      core.start();
      // Health follows the membership: NOT_SERVING while this node serves nothing (not added
      // yet, leaving once reads have switched, removed, declared dead), so load balancers and
      // orchestrators stop sending it clients.
      const healthOfMembership = () => {
        if (node!.stopping) return;
        try {
          core!.membership.assertCoordinating();
          health.setStatus('healthy');
        } catch {
          health.setStatus('unhealthy');
        }
      };
      core.membership.onChange(() => healthOfMembership());
      healthOfMembership();
      if (core.membership.isUnjoined && config.cluster.join.length > 0 && peerAddress !== undefined) {
        const advertised = peerAddress;
        const messageBytes = core.peerMessageBytes;
        void probeJoinAddresses(selfId, config.cluster.join, (address) => {
          // The member's id is not known yet: with peerTls, any certificate naming one kvstore node.
          const channel = createChannel(address, peerTls === undefined ? undefined : peerChannelCredentialsAnyNode(peerTls), { ...peerChannelOptions(messageBytes), ...(peerTls === undefined ? {} : peerTlsChannelOptions('kvstore-join')) });
          return { client: createClient(PeerServiceDefinition, channel), close: () => channel.close() };
        })
          .then((results) => reportJoinProbe(selfId, advertised, { replicationFactor: config.cluster.replicationFactor, vnodesPerMember: config.cluster.vnodesPerMember }, results, logger))
          .catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'cluster.join: probing the join addresses failed'));
      }
      logger.info(
        { nodeId: selfId, listen: listenAddress, peerListen: peerAddress, metricsListen: metrics?.address, dataDir: config.dataDir, members: members.map((m) => m.id), replicationFactor: config.cluster.replicationFactor },
        `kvstore node ${selfId} listening on ${listenAddress}, data in ${config.dataDir}`,
      );
      return node;
    } catch (err) {
      for (const t of tlsSources) t.close();
      await metrics?.close();
      await core?.stop();
      throw err;
    }
  }

  /** The Prometheus metrics page (see metrics.ts); only with `metricsListen`. */
  metricsPage(): Promise<string> {
    if (this.nodeMetrics === undefined) return Promise.reject(new Error('metrics are off (metricsListen is not set)'));
    return this.nodeMetrics.render();
  }

  /** The counters /metrics reads besides Status. */
  metricsCounters(): NodeCounters {
    return {
      deliveredByPeer: new Map(this.peers.loops().map((l) => [l.peerId, l.delivered])),
      readRepairs: this.coordinator.counters.readRepairs,
      operationStreams: this.streamStats,
      budget: this.budget,
      running: this.runningOperations,
      safety: {
        restampedWrites: this.coordinator.counters.restampedWrites,
        versionCollisions: this.repo.versionCollisions,
        unhandledRejections: unhandledRejections.count,
        tombstonesPurged: this.tombstones.purged,
        refusedByPeer: new Map(this.peers.loops().map((l) => [l.peerId, l.refused])),
        notReplicatedByPeer: new Map(this.peers.loops().map((l) => [l.peerId, l.notReplicated])),
        retargetedEntries: this.core.changes.retargetedCopies,
        lateRequestsRefused: this.lateRequestStats.lateRequestsRefused,
      },
    };
  }

  /** Members' owned shares, computed once per ring (the ring changes only with the membership). */
  private ownedShares = { ring: undefined as Ring | undefined, shares: new Map<string, number>() };

  private ownedShareOf(id: string): number {
    const ring = this.core.ring();
    if (this.ownedShares.ring !== ring) this.ownedShares = { ring, shares: new Map() };
    let share = this.ownedShares.shares.get(id);
    if (share === undefined) {
      share = ring.ownedShare(id, this.config.cluster.replicationFactor);
      this.ownedShares.shares.set(id, share);
    }
    return share;
  }

  /** This node's view of itself and every member. */
  status(): StatusResponse {
    const counts = this.repo.recordCounts();
    const now = Date.now();
    // Removed members too (ids are never reused; the list says what became of them).
    const members = this.core.membership.current().members;
    return {
      nodeId: this.config.nodeId,
      uptimeSeconds: (now - this.startedAtMs) / 1000,
      keyCount: BigInt(counts.live),
      recordCount: BigInt(counts.records),
      replicationFactor: this.config.cluster.replicationFactor,
      listen: this.listenAddress,
      dataDir: this.config.dataDir,
      version: serverVersion,
      warnings: [...this.securityWarnings],
      redacted: false,
      membershipEpoch: BigInt(this.core.membership.epoch),
      tombstonesPurged: BigInt(this.tombstones.purged),
      tombstoneGcHeldBack: this.tombstones.lastHoldBack ?? '',
      ...(() => {
        const change = this.core.changes.describe();
        return change === undefined
          ? { membershipChange: '', membershipChangeProgress: undefined }
          : { membershipChange: change.text, membershipChangeProgress: { transfersDone: change.transfersDone, transfersTotal: change.transfersTotal, keys: BigInt(change.keys), bytes: BigInt(change.bytes) } };
      })(),
      members: members.map((m) => {
        const link = this.peers.link(m.id);
        const place = { state: memberStateMessage(m.state), ownedShare: m.state === 'removed' ? 0 : this.ownedShareOf(m.id), dead: m.dead === true };
        if (link === undefined) {
          const self = m.id === this.config.nodeId;
          return {
            ...place,
            nodeId: m.id,
            // A single node started without cluster.members serves no peer port.
            peer: self && this.config.cluster.members.length === 0 ? (this.peerAddress ?? '') : m.peer,
            self,
            reachable: self,
            backlogEntries: 0n,
            backlogBytes: 0n,
            backlogOldestAgeMs: 0n,
            lastContactUnixMs: self ? BigInt(now) : 0n,
            droppedEntries: 0n,
            lastExchangeUnixMs: 0n,
            lastExchangeRepaired: 0n,
            lastExchangeError: '',
          };
        }
        // A member declared dead has no queue any more (its entries were dropped).
        const backlog = this.peers.loop(m.id) === undefined ? { entries: 0, bytes: 0, oldestEnqueuedAtMs: undefined, dropped: 0 } : this.repo.hints.stats(m.id);
        const exchange = this.antiEntropy.lastExchange.get(m.id);
        return {
          ...place,
          nodeId: m.id,
          peer: m.peer,
          self: false,
          reachable: link.reachable,
          backlogEntries: BigInt(backlog.entries),
          backlogBytes: BigInt(backlog.bytes),
          backlogOldestAgeMs: BigInt(backlog.oldestEnqueuedAtMs === undefined ? 0 : Math.max(0, now - backlog.oldestEnqueuedAtMs)),
          lastContactUnixMs: BigInt(link.lastContactMs),
          droppedEntries: BigInt(backlog.dropped),
          lastExchangeUnixMs: BigInt(exchange?.finishedAtMs ?? 0),
          lastExchangeRepaired: BigInt((exchange?.pulled ?? 0) + (exchange?.pushed ?? 0)),
          lastExchangeError: exchange?.error ?? '',
        };
      }),
    };
  }

  /** Carries out a membership change (ChangeMembership): see NodeCore.changeMembership. */
  async changeMembership(request: ChangeMembershipRequest): Promise<ChangeMembershipResponse> {
    const command = membershipCommandOf(request);
    const outgoing = command.kind === 'remove' ? command.id : command.kind === 'replace' ? command.oldId : undefined;
    const deadBefore = outgoing !== undefined && this.core.membership.member(outgoing)?.dead === true;
    const committed = await this.core.changeMembership(command);
    const declared = outgoing !== undefined && !deadBefore && committed.members.find((m) => m.id === outgoing)?.dead === true;
    const description =
      command.kind === 'mark-dead'
        ? `${command.id} declared dead: it gets no writes, holds no tombstone purge back and is fenced; it still owns its ranges (one replica fewer) until it is removed or replaced`
        : committed.change !== undefined
          ? `${declared ? `${outgoing} declared dead first (no member reached it for membership.deadAfterSeconds); ` : ''}${describeChange(committed, committed.change)}: started`
          : `change cancelled`;
    return { epoch: BigInt(committed.epoch), description };
  }

  /** Backs up this node, or with `allNodes` every member (members that fail are reported, not fatal). */
  async backup(allNodes: boolean): Promise<BackupStatus> {
    const own = await this.backupSelf();
    if (!allNodes) return { ...toBackupStatus(own), nodes: [], error: '' };
    const links = this.peers.links();
    const results = await Promise.allSettled(links.map((l) => backupPeer(l, this.config.nodeId, shutdownGraceMs * 6)));
    const nodes: BackupStatus[] = [{ ...toBackupStatus(own), nodes: [], error: '' }];
    const errors: string[] = [];
    results.forEach((r, i) => {
      const id = links[i]!.id;
      if (r.status === 'fulfilled') nodes.push({ ...toBackupStatus(r.value), nodes: [], error: '' });
      else {
        const message = `${id}: ${(r.reason as Error).message}`;
        errors.push(message);
        nodes.push({ path: '', bytes: 0n, keyCount: 0n, createdAtUnixMs: 0n, nodeId: id, nodes: [], error: message });
      }
    });
    return { ...toBackupStatus(own), nodes, error: errors.join('; ') };
  }

  /**
   * Graceful stop: refuse new calls and let in-flight ones finish (their replication included),
   * then stop delivery and close LMDB. Entries still in the log are delivered after restart.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.health.setStatus('unhealthy');
    this.authenticator?.close();
    await this.metrics?.close();
    const forceTimer = setTimeout(() => {
      this.logger.warn({ graceMs: shutdownGraceMs }, 'in-flight calls did not finish in time; cutting them off');
      this.publicServer.forceShutdown();
      this.peerServer?.forceShutdown();
    }, shutdownGraceMs);
    try {
      // Clients hold OperationStreams open indefinitely: once new calls are refused, end them
      // (each answers the operations it read first), or the shutdown would wait for the timer.
      const publicDrained = this.publicServer.shutdown();
      this.operationStreamsClosing.abort();
      await publicDrained;
      // Peers hold streams open indefinitely: end them (after the message in progress) so the
      // peer server's graceful shutdown does not wait for the force timer.
      this.peerStreamsClosing.abort();
      await this.peerServer?.shutdown();
    } finally {
      clearTimeout(forceTimer);
    }
    await this.core.stop();
    for (const t of this.tlsSources) t.close();
  }
}

/** `server` with the gRPC metrics middleware first, when the node keeps metrics. */
function withGrpcMetrics(server: Server, metrics: NodeMetrics | undefined): Server {
  return metrics === undefined ? server : server.use(metrics.grpc.middleware());
}

function withPort(hostPort: string, port: number): string {
  return `${hostPort.slice(0, hostPort.lastIndexOf(':'))}:${port}`;
}

function toBackupStatus(b: NodeBackup): Omit<BackupStatus, 'nodes' | 'error'> {
  return { path: b.path, bytes: BigInt(b.bytes), keyCount: BigInt(b.keyCount), createdAtUnixMs: BigInt(b.createdAtMs), nodeId: b.nodeId };
}

function toPeerBackup(b: NodeBackup) {
  return { path: b.path, bytes: BigInt(b.bytes), keyCount: BigInt(b.keyCount), createdAtUnixMs: BigInt(b.createdAtMs), nodeId: b.nodeId };
}

/** A membership state as its Status enum ('normal' -> MEMBER_STATE_NORMAL). */
function memberStateMessage(state: MemberState | undefined): MemberStateMessage {
  return state === undefined ? MemberStateMessage.MEMBER_STATE_UNSPECIFIED : memberStateFromJSON(`MEMBER_STATE_${state.toUpperCase()}`);
}

/** A ChangeMembership request as the core's command; INVALID_ARGUMENT names what is missing. */
function membershipCommandOf(request: ChangeMembershipRequest): MembershipCommand {
  const need = (value: string, what: string) => {
    if (value === '') throw new InvalidRequestError(`ChangeMembership: ${what} is empty`);
    return value;
  };
  if (request.markDead !== undefined) return { kind: 'mark-dead', id: need(request.markDead.nodeId, 'mark_dead.node_id') };
  if (request.add !== undefined) return { kind: 'add', id: need(request.add.nodeId, 'add.node_id'), peer: need(request.add.peer, 'add.peer') };
  if (request.remove !== undefined) return { kind: 'remove', id: need(request.remove.nodeId, 'remove.node_id') };
  if (request.replace !== undefined) {
    const { oldNodeId, newNodeId, peer } = request.replace;
    return { kind: 'replace', oldId: need(oldNodeId, 'replace.old_node_id'), newId: need(newNodeId, 'replace.new_node_id'), peer: need(peer, 'replace.peer') };
  }
  if (request.cancel !== undefined) return { kind: 'cancel' };
  throw new InvalidRequestError('ChangeMembership: no change given (one of mark_dead, add, remove, replace, cancel)');
}
