import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { MemberState, type StatusResponse } from '../../gen/kvstore/v1/kvstore.js';
import type { MetricsDecision } from './auth/metrics-access.js';

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ExchangeResult } from '../replication/anti-entropy.js';
import { GrpcServerMetrics, statusName } from './grpc-metrics-middleware.js';
import type { OperationKind } from './kv-service.js';

/**
 * Prometheus metrics (`GET /metrics`, text exposition format 0.0.4) with prom-client: one
 * Registry per node (several nodes may run in one process: tests, the simulator). The node's
 * state (the Status view and its counters) is read at scrape time by `collect()` callbacks, so
 * the serving paths keep only the counters they kept anyway; latencies are real histograms, fed
 * by observers the node sets on its parts (gRPC middleware, delivery loops, repository,
 * anti-entropy). The process's own metrics (event loop, GC, heap, handles) come from
 * prom-client's collectDefaultMetrics, once per process (see processRegistry). Every metric is
 * listed in docs/monitoring.md.
 */

/** Counters the node keeps that Status does not carry. */
export interface NodeCounters {
  /** Replication-log entries delivered to each peer since start. */
  readonly deliveredByPeer: ReadonlyMap<string, number>;
  /** Read repairs this node sent as a coordinator since start. */
  readonly readRepairs: number;
  /** Clients' OperationStreams. */
  readonly operationStreams: { readonly open: number; readonly inFlight: number; readonly answered: number };
  /** The request-bytes budget (limits.maxInFlightBytes). */
  readonly budget: { readonly inFlightBytes: number; readonly maxBytes: number; readonly refused: number; readonly waited: number };
  /** The node-wide slots of Batch and OperationStream operations (running-operations.ts). */
  readonly running: { readonly count: number; readonly max: number; readonly waited: number };
  /** Data-safety counters (see docs/design-notes.md, "Versions" and "Tombstone purge"). */
  readonly safety: {
    readonly restampedWrites: number;
    readonly versionCollisions: number;
    readonly unhandledRejections: number;
    readonly tombstonesPurged: number;
    readonly refusedByPeer: ReadonlyMap<string, number>;
    /** Log entries each peer turned away as none of its keys' owners any more (after a membership change). */
    readonly notReplicatedByPeer: ReadonlyMap<string, number>;
    /** Log entries copied to the members gaining their keys' ranges (membership changes, log-retarget.ts). */
    readonly retargetedEntries: number;
    readonly lateRequestsRefused: number;
  };
}

/** What one scrape reads of the node. */
export interface NodeSnapshot {
  readonly status: StatusResponse;
  readonly counters: NodeCounters;
}

/** The content type Prometheus expects for the text format (prom-client's Registry.contentType). */
export const metricsContentType = 'text/plain; version=0.0.4; charset=utf-8';

/** Latency buckets (seconds) of operations, deliveries and commits: 100 µs to 10 s. */
const latencySecondsBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Size buckets (records or entries) of commits and delivery batches. */
const batchSizeBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
/** Anti-entropy exchange buckets (seconds): 10 ms to 1 h. */
const exchangeSecondsBuckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

interface Sample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

type Member = StatusResponse['members'][number];

let processMetrics: Registry | undefined;

/**
 * The process's metrics (prom-client's default set: CPU, memory, heap and heap spaces, event-loop
 * lag, GC, open handles and file descriptors, Node version), collected once per process and shown
 * on every node's page. collectDefaultMetrics per node registry would start one GC observer and
 * one event-loop delay monitor per node, which prom-client never stops: each node started in a
 * process (tests, the simulator's restarts) would leave them running, holding its registry and so
 * the node itself. Neither keeps the process alive.
 */
function processRegistry(): Registry {
  if (processMetrics === undefined) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}

/** One node's metrics: its registry, the histograms its parts feed, and the page. */
export class NodeMetrics {
  /** This node's metrics only (not the process's). */
  readonly registry = new Registry();
  /** Feeds the kvstore_grpc_server_* metrics: `.use(metrics.grpc.middleware())` on a server. */
  readonly grpc: GrpcServerMetrics;
  /** What a scrape serves: this node's registry and the process's. */
  private readonly page: Registry;
  /** The snapshot of the scrape in progress (read once per scrape, not once per metric). */
  private current: NodeSnapshot | undefined;
  private readonly operationSeconds: Histogram<'rpc' | 'operation' | 'code'>;
  private readonly deliverySeconds: Histogram<'peer'>;
  private readonly deliveryEntries: Histogram<'peer'>;
  private readonly commitSeconds: Histogram;
  private readonly commitRecords: Histogram;
  private readonly commitFailures: Counter;
  private readonly exchangeSeconds: Histogram<'peer' | 'result'>;
  private readonly repairedRecords: Counter<'peer' | 'direction'>;

  /**
   * @param read the node's state, read at every scrape (a throw answers the scrape 500).
   * @param peers the other members' ids (their series exist from the start, at 0).
   */
  constructor(
    private readonly read: () => NodeSnapshot,
    peers: readonly string[],
    options: { readonly processMetrics?: boolean } = {},
  ) {
    this.registerNodeState();
    const registers = [this.registry];
    this.grpc = new GrpcServerMetrics(this.registry);
    this.operationSeconds = new Histogram({
      name: 'kvstore_operation_duration_seconds',
      help: 'Seconds a Batch or OperationStream operation took, from being read (waits for a running slot included) to its result, by RPC, operation and status code.',
      labelNames: ['rpc', 'operation', 'code'],
      buckets: latencySecondsBuckets,
      registers,
    });
    this.deliverySeconds = new Histogram({ name: 'kvstore_replication_delivery_duration_seconds', help: 'Seconds from sending a replication-log batch to the peer to its acknowledgement.', labelNames: ['peer'], buckets: latencySecondsBuckets, registers });
    this.deliveryEntries = new Histogram({ name: 'kvstore_replication_delivery_batch_entries', help: 'Entries in each replication-log batch the peer acknowledged.', labelNames: ['peer'], buckets: batchSizeBuckets, registers });
    this.commitSeconds = new Histogram({ name: 'kvstore_storage_commit_duration_seconds', help: 'Seconds from the start of a shared LMDB write transaction (group commit) to its flush to disk.', buckets: latencySecondsBuckets, registers });
    this.commitRecords = new Histogram({ name: 'kvstore_storage_commit_records', help: 'Records written by each shared LMDB write transaction (its batch size).', buckets: batchSizeBuckets, registers });
    this.commitFailures = new Counter({ name: 'kvstore_storage_commit_failures_total', help: 'Shared LMDB write transactions that failed to commit or flush (every write in them failed).', registers });
    this.exchangeSeconds = new Histogram({ name: 'kvstore_anti_entropy_exchange_duration_seconds', help: 'Seconds an anti-entropy exchange with the peer took, by result (ok or error).', labelNames: ['peer', 'result'], buckets: exchangeSecondsBuckets, registers });
    this.repairedRecords = new Counter({ name: 'kvstore_anti_entropy_repaired_records_total', help: 'Records anti-entropy copied from the peer (pulled) or to it (pushed).', labelNames: ['peer', 'direction'], registers });
    for (const peer of peers) {
      this.deliverySeconds.zero({ peer });
      this.deliveryEntries.zero({ peer });
      this.exchangeSeconds.zero({ peer, result: 'ok' });
      this.repairedRecords.inc({ peer, direction: 'pulled' }, 0);
      this.repairedRecords.inc({ peer, direction: 'pushed' }, 0);
    }
    this.page = options.processMetrics === false ? this.registry : Registry.merge([this.registry, processRegistry()]);
  }

  /** The metrics page: this node's metrics, then the process's. */
  async render(): Promise<string> {
    this.current = this.read();
    try {
      return await this.page.metrics();
    } finally {
      this.current = undefined;
    }
  }

  /** A Batch or OperationStream operation finished with status `code` (0 is OK). */
  observeOperation(rpc: 'Batch' | 'OperationStream', operation: OperationKind, code: number, seconds: number): void {
    this.operationSeconds.observe({ rpc, operation, code: statusName(code) }, seconds);
  }

  /** `peer` acknowledged a replication-log batch. */
  observeDelivery(peer: string, batch: { readonly entries: number; readonly durationMs: number }): void {
    this.deliverySeconds.observe({ peer }, batch.durationMs / 1000);
    this.deliveryEntries.observe({ peer }, batch.entries);
  }

  /** A shared write transaction ended. */
  observeCommit(commit: { readonly records: number; readonly durationMs: number; readonly failed: boolean }): void {
    if (commit.failed) {
      this.commitFailures.inc();
      return;
    }
    this.commitSeconds.observe(commit.durationMs / 1000);
    this.commitRecords.observe(commit.records);
  }

  /** An anti-entropy exchange ended. */
  observeExchange(result: ExchangeResult): void {
    this.exchangeSeconds.observe({ peer: result.peer, result: result.error === undefined ? 'ok' : 'error' }, Math.max(0, result.durationMs) / 1000);
    if (result.pulled > 0) this.repairedRecords.inc({ peer: result.peer, direction: 'pulled' }, result.pulled);
    if (result.pushed > 0) this.repairedRecords.inc({ peer: result.peer, direction: 'pushed' }, result.pushed);
  }

  private snapshot(): NodeSnapshot {
    return this.current ?? this.read();
  }

  /** The metrics read from the node's state at every scrape (the ones the hand-written page had, unchanged). */
  private registerNodeState(): void {
    const one = (value: number): Sample[] => [{ value }];
    // Members removed or declared dead are not peers any more (no link, no log): no per-peer series.
    const peersOf = (s: NodeSnapshot) => s.status.members.filter((m) => !m.self && !m.dead && m.state !== MemberState.MEMBER_STATE_REMOVED);
    const perPeer = (value: (m: Member, s: NodeSnapshot) => number) => (s: NodeSnapshot): Sample[] => peersOf(s).map((m) => ({ labels: { peer: m.nodeId }, value: value(m, s) }));
    const peerLabel = ['peer'];
    const gauge = (name: string, help: string, samples: (s: NodeSnapshot) => Sample[], labelNames: string[] = []) => this.collected('gauge', name, help, labelNames, samples);
    const counter = (name: string, help: string, samples: (s: NodeSnapshot) => Sample[], labelNames: string[] = []) => this.collected('counter', name, help, labelNames, samples);
    gauge('kvstore_info', 'Node identity (value always 1).', (s) => [{ labels: { node_id: s.status.nodeId, version: s.status.version }, value: 1 }], ['node_id', 'version']);
    gauge('kvstore_uptime_seconds', 'Seconds since the node started.', (s) => one(s.status.uptimeSeconds));
    gauge('kvstore_keys', 'Live (non-deleted) records stored on this node.', (s) => one(Number(s.status.keyCount)));
    gauge('kvstore_records', 'Records stored on this node, tombstones included.', (s) => one(Number(s.status.recordCount)));
    gauge('kvstore_replication_factor', 'Replicas per key.', (s) => one(s.status.replicationFactor));
    counter('kvstore_read_repairs_total', 'Read repairs sent by this node as coordinator.', (s) => one(s.counters.readRepairs));
    gauge('kvstore_operation_streams_open', "Clients' OperationStreams open now.", (s) => one(s.counters.operationStreams.open));
    gauge('kvstore_stream_operations_in_flight', 'OperationStream operations read and not yet answered.', (s) => one(s.counters.operationStreams.inFlight));
    counter('kvstore_stream_operations_total', 'OperationStream operations answered since start.', (s) => one(s.counters.operationStreams.answered));
    gauge('kvstore_in_flight_request_bytes', 'Bytes of keys and values (plus a fixed overhead per operation) of public operations received and not yet answered, and of Batch and OperationStream answers not yet handed to gRPC.', (s) => one(s.counters.budget.inFlightBytes));
    gauge('kvstore_in_flight_request_bytes_max', 'limits.maxInFlightBytes: past it, unary and Batch calls are refused and OperationStreams wait.', (s) => one(s.counters.budget.maxBytes));
    counter('kvstore_overload_refused_calls_total', 'Unary and Batch calls refused with RESOURCE_EXHAUSTED because the in-flight budget was full.', (s) => one(s.counters.budget.refused));
    counter('kvstore_overload_waited_stream_messages_total', 'OperationStream messages that waited for room in the in-flight budget.', (s) => one(s.counters.budget.waited));
    gauge('kvstore_running_operations', 'Batch and OperationStream operations running now (at most kvstore_running_operations_max).', (s) => one(s.counters.running.count));
    gauge('kvstore_running_operations_max', 'Slots for Batch and OperationStream operations running at once.', (s) => one(s.counters.running.max));
    counter('kvstore_running_operations_waited_total', 'Batch and OperationStream operations that waited for a slot.', (s) => one(s.counters.running.waited));
    counter('kvstore_write_restamps_total', 'Write rounds repeated because a replica held a newer version than the one stamped (clock skew, concurrent writers).', (s) => one(s.counters.safety.restampedWrites));
    counter('kvstore_version_collisions_total', 'Two different records seen with the same version (must stay 0).', (s) => one(s.counters.safety.versionCollisions));
    counter('kvstore_unhandled_rejections_total', 'Promise rejections no handler took (bugs; logged, the node keeps serving).', (s) => one(s.counters.safety.unhandledRejections));
    counter('kvstore_tombstones_purged_total', 'Tombstones this node purged, each held by every replica first.', (s) => one(s.counters.safety.tombstonesPurged));
    gauge('kvstore_tombstone_gc_held_back', "Whether this node's last tombstone GC step purged fewer tombstones than it had candidates (1), e.g. a member did not confirm; kvctl status says why.", (s) => one(s.status.tombstoneGcHeldBack === '' ? 0 : 1));
    gauge('kvstore_membership_epoch', 'The membership epoch this node runs with (docs/membership.md).', (s) => one(Number(s.status.membershipEpoch)));
    gauge('kvstore_membership_change_in_progress', 'Whether a membership change (add, remove, replace) is in progress as this node sees it (1).', (s) => one(s.status.membershipChange === '' ? 0 : 1));
    const progress = (s: NodeSnapshot) => s.status.membershipChangeProgress;
    gauge('kvstore_streaming_ranges', 'Ranges the members gaining ranges in the change in progress must receive, as far as this node knows (its own; on the driver, every receiver\'s).', (s) => one(progress(s)?.transfersTotal ?? 0));
    gauge('kvstore_streaming_ranges_pending', 'Of those, the ranges not complete yet.', (s) => one((progress(s)?.transfersTotal ?? 0) - (progress(s)?.transfersDone ?? 0)));
    gauge('kvstore_streaming_received_keys', 'Keys received by streaming in the change in progress, as far as this node knows.', (s) => one(Number(progress(s)?.keys ?? 0)));
    gauge('kvstore_streaming_received_bytes', 'Bytes received by streaming in the change in progress, as far as this node knows.', (s) => one(Number(progress(s)?.bytes ?? 0)));
    counter('kvstore_replication_refused_entries_total', 'Replication-log entries the peer refused as older than its tombstone grace.', perPeer((m, s) => s.counters.safety.refusedByPeer.get(m.nodeId) ?? 0), peerLabel);
    counter('kvstore_replication_not_replicated_entries_total', 'Replication-log entries the peer turned away because it no longer owns their keys (a completed membership change moved them; they were copied to the new owners first).', perPeer((m, s) => s.counters.safety.notReplicatedByPeer.get(m.nodeId) ?? 0), peerLabel);
    counter('kvstore_replication_retargeted_entries_total', 'Replication-log entries held for a member losing their keys, copied to the members gaining them at the start of a membership change.', (s) => one(s.counters.safety.retargetedEntries));
    counter('kvstore_late_requests_refused_total', "Client operations refused unapplied because they arrived more than clock.maxDriftMs after their client's deadline.", (s) => one(s.counters.safety.lateRequestsRefused));
    gauge('kvstore_peer_reachable', 'Whether the last contact with the peer succeeded (1) or not (0).', perPeer((m) => (m.reachable ? 1 : 0)), peerLabel);
    gauge('kvstore_peer_last_contact_timestamp_seconds', 'Unix time of the last successful contact with the peer (0 if never).', perPeer((m) => Number(m.lastContactUnixMs) / 1000), peerLabel);
    gauge('kvstore_replication_backlog_entries', 'Replication-log entries waiting for the peer.', perPeer((m) => Number(m.backlogEntries)), peerLabel);
    gauge('kvstore_replication_backlog_bytes', 'Bytes of the replication-log entries waiting for the peer.', perPeer((m) => Number(m.backlogBytes)), peerLabel);
    gauge('kvstore_replication_backlog_oldest_age_seconds', 'Age of the oldest entry waiting for the peer (0 when none).', perPeer((m) => Number(m.backlogOldestAgeMs) / 1000), peerLabel);
    counter('kvstore_replication_delivered_entries_total', 'Replication-log entries delivered to the peer since start.', perPeer((m, s) => s.counters.deliveredByPeer.get(m.nodeId) ?? 0), peerLabel);
    counter('kvstore_replication_dropped_entries_total', 'Entries dropped towards the peer by the hints limits (anti-entropy repairs them).', perPeer((m) => Number(m.droppedEntries)), peerLabel);
    gauge('kvstore_anti_entropy_last_exchange_timestamp_seconds', 'Unix time of the last anti-entropy exchange with the peer (0 if none).', perPeer((m) => Number(m.lastExchangeUnixMs) / 1000), peerLabel);
    gauge('kvstore_anti_entropy_last_exchange_repaired_records', 'Records copied (both ways) by the last exchange with the peer.', perPeer((m) => Number(m.lastExchangeRepaired)), peerLabel);
    gauge('kvstore_anti_entropy_last_exchange_failed', 'Whether the last exchange with the peer failed (1) or not (0).', perPeer((m) => (m.lastExchangeError === '' ? 0 : 1)), peerLabel);
  }

  /** A gauge or counter whose samples are read from the scrape's snapshot. */
  private collected(type: 'gauge' | 'counter', name: string, help: string, labelNames: string[], samples: (s: NodeSnapshot) => Sample[]): void {
    const config = { name, help, labelNames, registers: [this.registry] };
    const read = () => samples(this.snapshot());
    // A counter's value is the node's own count: set by reset and inc (counters have no set).
    if (type === 'gauge') new Gauge({ ...config, collect() { this.reset(); for (const x of read()) this.set(x.labels ?? {}, x.value); } });
    else new Counter({ ...config, collect() { this.reset(); for (const x of read()) this.inc(x.labels ?? {}, x.value); } });
  }
}

/**
 * The certificate and key /metrics serves HTTPS with (the public port's `tls`, followed across
 * its reloads); structurally tls-credentials.ts's ReloadingTls.
 */
export interface MetricsTls {
  readonly current: { readonly cert: Buffer; readonly key: Buffer };
  onChange(listener: (tls: { readonly cert: Buffer; readonly key: Buffer }) => void): () => void;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** host:port it listens on (the real port when configured with port 0). */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Serves `render()` at `GET /metrics` on `listen` (host:port); every other path answers 404.
 * With `access`, a scrape it refuses answers its 401 or 403 (with `WWW-Authenticate: Bearer`).
 * With `tls`, it speaks HTTPS only (no client certificate asked: the token is the credential).
 */
export async function startMetricsServer(listen: string, render: () => string | Promise<string>, access?: (authorization: string | undefined) => MetricsDecision, tls?: MetricsTls): Promise<MetricsServer> {
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(listen.slice(at + 1));
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('kvstore serves only GET /metrics here\n');
      return;
    }
    try {
      const decision = access?.(req.headers.authorization);
      if (decision !== undefined && decision.status !== 200) {
        res.writeHead(decision.status, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="kvstore metrics"' }).end(`${decision.message}\n`);
        return;
      }
      const page = await render();
      res.writeHead(200, { 'content-type': metricsContentType }).end(page);
    } catch (err) {
      // The connection may be gone (the server closing): nothing to answer then.
      if (!res.headersSent && !res.destroyed) res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`);
    }
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => void handle(req, res).catch(() => res.destroy());
  let stopFollowing: (() => void) | undefined;
  let server: Server;
  if (tls === undefined) {
    server = createServer(onRequest);
  } else {
    const https = createHttpsServer({ cert: tls.current.cert, key: tls.current.key }, onRequest);
    // New connections use reloaded certificates (as the gRPC ports do).
    stopFollowing = tls.onChange((next) => https.setSecureContext({ cert: next.cert, key: next.key }));
    server = https;
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    address: `${host.includes(':') ? `[${host}]` : host}:${bound.port}`,
    close: () => new Promise<void>((resolve) => {
      stopFollowing?.();
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
