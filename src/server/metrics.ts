import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { StatusResponse } from '../../gen/kvstore/v1/kvstore.js';
import type { MetricsDecision } from './auth/metrics-access.js';

/**
 * Prometheus metrics over plain HTTP (`GET /metrics`, text exposition format 0.0.4), built from
 * the same view as the Status RPC plus the node's counters. No client library: the format is a
 * few lines of text, and a scrape reads values the node keeps anyway.
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
    readonly lateRequestsRefused: number;
  };
}

/** The content type Prometheus expects for the text format. */
export const metricsContentType = 'text/plain; version=0.0.4; charset=utf-8';

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter';
  readonly samples: readonly { readonly labels?: Readonly<Record<string, string>>; readonly value: number }[];
}

/** The metrics page for one node. */
export function renderMetrics(status: StatusResponse, counters: NodeCounters): string {
  const peers = status.members.filter((m) => !m.self);
  const perPeer = (value: (m: (typeof peers)[number]) => number) => peers.map((m) => ({ labels: { peer: m.nodeId }, value: value(m) }));
  const families: Family[] = [
    { name: 'kvstore_info', help: 'Node identity (value always 1).', type: 'gauge', samples: [{ labels: { node_id: status.nodeId, version: status.version }, value: 1 }] },
    { name: 'kvstore_uptime_seconds', help: 'Seconds since the node started.', type: 'gauge', samples: [{ value: status.uptimeSeconds }] },
    { name: 'kvstore_keys', help: 'Live (non-deleted) records stored on this node.', type: 'gauge', samples: [{ value: Number(status.keyCount) }] },
    { name: 'kvstore_records', help: 'Records stored on this node, tombstones included.', type: 'gauge', samples: [{ value: Number(status.recordCount) }] },
    { name: 'kvstore_replication_factor', help: 'Replicas per key.', type: 'gauge', samples: [{ value: status.replicationFactor }] },
    { name: 'kvstore_read_repairs_total', help: 'Read repairs sent by this node as coordinator.', type: 'counter', samples: [{ value: counters.readRepairs }] },
    { name: 'kvstore_operation_streams_open', help: "Clients' OperationStreams open now.", type: 'gauge', samples: [{ value: counters.operationStreams.open }] },
    { name: 'kvstore_stream_operations_in_flight', help: 'OperationStream operations read and not yet answered.', type: 'gauge', samples: [{ value: counters.operationStreams.inFlight }] },
    { name: 'kvstore_stream_operations_total', help: 'OperationStream operations answered since start.', type: 'counter', samples: [{ value: counters.operationStreams.answered }] },
    { name: 'kvstore_in_flight_request_bytes', help: 'Bytes of keys and values (plus a fixed overhead per operation) of public operations received and not yet answered, and of Batch and OperationStream answers not yet handed to gRPC.', type: 'gauge', samples: [{ value: counters.budget.inFlightBytes }] },
    { name: 'kvstore_in_flight_request_bytes_max', help: 'limits.maxInFlightBytes: past it, unary and Batch calls are refused and OperationStreams wait.', type: 'gauge', samples: [{ value: counters.budget.maxBytes }] },
    { name: 'kvstore_overload_refused_calls_total', help: 'Unary and Batch calls refused with RESOURCE_EXHAUSTED because the in-flight budget was full.', type: 'counter', samples: [{ value: counters.budget.refused }] },
    { name: 'kvstore_overload_waited_stream_messages_total', help: 'OperationStream messages that waited for room in the in-flight budget.', type: 'counter', samples: [{ value: counters.budget.waited }] },
    { name: 'kvstore_running_operations', help: 'Batch and OperationStream operations running now (at most kvstore_running_operations_max).', type: 'gauge', samples: [{ value: counters.running.count }] },
    { name: 'kvstore_running_operations_max', help: 'Slots for Batch and OperationStream operations running at once.', type: 'gauge', samples: [{ value: counters.running.max }] },
    { name: 'kvstore_running_operations_waited_total', help: 'Batch and OperationStream operations that waited for a slot.', type: 'counter', samples: [{ value: counters.running.waited }] },
    { name: 'kvstore_write_restamps_total', help: 'Write rounds repeated because a replica held a newer version than the one stamped (clock skew, concurrent writers).', type: 'counter', samples: [{ value: counters.safety.restampedWrites }] },
    { name: 'kvstore_version_collisions_total', help: 'Two different records seen with the same version (must stay 0).', type: 'counter', samples: [{ value: counters.safety.versionCollisions }] },
    { name: 'kvstore_unhandled_rejections_total', help: 'Promise rejections no handler took (bugs; logged, the node keeps serving).', type: 'counter', samples: [{ value: counters.safety.unhandledRejections }] },
    { name: 'kvstore_tombstones_purged_total', help: 'Tombstones this node purged, each held by every replica first.', type: 'counter', samples: [{ value: counters.safety.tombstonesPurged }] },
    { name: 'kvstore_replication_refused_entries_total', help: 'Replication-log entries the peer refused as older than its tombstone grace.', type: 'counter', samples: perPeer((m) => counters.safety.refusedByPeer.get(m.nodeId) ?? 0) },
    { name: 'kvstore_late_requests_refused_total', help: "Client operations refused unapplied because they arrived more than clock.maxDriftMs after their client's deadline.", type: 'counter', samples: [{ value: counters.safety.lateRequestsRefused }] },
    { name: 'kvstore_peer_reachable', help: 'Whether the last contact with the peer succeeded (1) or not (0).', type: 'gauge', samples: perPeer((m) => (m.reachable ? 1 : 0)) },
    { name: 'kvstore_peer_last_contact_timestamp_seconds', help: 'Unix time of the last successful contact with the peer (0 if never).', type: 'gauge', samples: perPeer((m) => Number(m.lastContactUnixMs) / 1000) },
    { name: 'kvstore_replication_backlog_entries', help: 'Replication-log entries waiting for the peer.', type: 'gauge', samples: perPeer((m) => Number(m.backlogEntries)) },
    { name: 'kvstore_replication_backlog_bytes', help: 'Bytes of the replication-log entries waiting for the peer.', type: 'gauge', samples: perPeer((m) => Number(m.backlogBytes)) },
    { name: 'kvstore_replication_backlog_oldest_age_seconds', help: 'Age of the oldest entry waiting for the peer (0 when none).', type: 'gauge', samples: perPeer((m) => Number(m.backlogOldestAgeMs) / 1000) },
    { name: 'kvstore_replication_delivered_entries_total', help: 'Replication-log entries delivered to the peer since start.', type: 'counter', samples: perPeer((m) => counters.deliveredByPeer.get(m.nodeId) ?? 0) },
    { name: 'kvstore_replication_dropped_entries_total', help: 'Entries dropped towards the peer by the hints limits (anti-entropy repairs them).', type: 'counter', samples: perPeer((m) => Number(m.droppedEntries)) },
    { name: 'kvstore_anti_entropy_last_exchange_timestamp_seconds', help: 'Unix time of the last anti-entropy exchange with the peer (0 if none).', type: 'gauge', samples: perPeer((m) => Number(m.lastExchangeUnixMs) / 1000) },
    { name: 'kvstore_anti_entropy_last_exchange_repaired_records', help: 'Records copied (both ways) by the last exchange with the peer.', type: 'gauge', samples: perPeer((m) => Number(m.lastExchangeRepaired)) },
    { name: 'kvstore_anti_entropy_last_exchange_failed', help: 'Whether the last exchange with the peer failed (1) or not (0).', type: 'gauge', samples: perPeer((m) => (m.lastExchangeError === '' ? 0 : 1)) },
  ];
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) lines.push(`${f.name}${formatLabels(s.labels)} ${formatValue(s.value)}`);
  }
  return lines.join('\n') + '\n';
}

function formatLabels(labels: Readonly<Record<string, string>> | undefined): string {
  if (labels === undefined) return '';
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`);
  return `{${parts.join(',')}}`;
}

function formatValue(value: number): string {
  return Number.isFinite(value) ? String(value) : 'NaN';
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
export async function startMetricsServer(listen: string, render: () => string, access?: (authorization: string | undefined) => MetricsDecision, tls?: MetricsTls): Promise<MetricsServer> {
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(listen.slice(at + 1));
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
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
      res.writeHead(200, { 'content-type': metricsContentType }).end(render());
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`);
    }
  };
  let stopFollowing: (() => void) | undefined;
  let server: Server;
  if (tls === undefined) {
    server = createServer(handle);
  } else {
    const https = createHttpsServer({ cert: tls.current.cert, key: tls.current.key }, handle);
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
