import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, type OperationStreamRequest } from '../../gen/kvstore/v1/kvstore.js';
import { op } from '../helpers/raw-stream.js';
import { SingleNode } from '../helpers/single-node.js';

/** The metrics the hand-written page had (before prom-client), with their types: kept as they were. */
const metricsBeforePromClient: Readonly<Record<string, 'gauge' | 'counter'>> = {
  kvstore_info: 'gauge',
  kvstore_uptime_seconds: 'gauge',
  kvstore_keys: 'gauge',
  kvstore_records: 'gauge',
  kvstore_replication_factor: 'gauge',
  kvstore_read_repairs_total: 'counter',
  kvstore_operation_streams_open: 'gauge',
  kvstore_stream_operations_in_flight: 'gauge',
  kvstore_stream_operations_total: 'counter',
  kvstore_in_flight_request_bytes: 'gauge',
  kvstore_in_flight_request_bytes_max: 'gauge',
  kvstore_overload_refused_calls_total: 'counter',
  kvstore_overload_waited_stream_messages_total: 'counter',
  kvstore_running_operations: 'gauge',
  kvstore_running_operations_max: 'gauge',
  kvstore_running_operations_waited_total: 'counter',
  kvstore_write_restamps_total: 'counter',
  kvstore_version_collisions_total: 'counter',
  kvstore_unhandled_rejections_total: 'counter',
  kvstore_tombstones_purged_total: 'counter',
  kvstore_replication_refused_entries_total: 'counter',
  kvstore_late_requests_refused_total: 'counter',
  kvstore_peer_reachable: 'gauge',
  kvstore_peer_last_contact_timestamp_seconds: 'gauge',
  kvstore_replication_backlog_entries: 'gauge',
  kvstore_replication_backlog_bytes: 'gauge',
  kvstore_replication_backlog_oldest_age_seconds: 'gauge',
  kvstore_replication_delivered_entries_total: 'counter',
  kvstore_replication_dropped_entries_total: 'counter',
  kvstore_anti_entropy_last_exchange_timestamp_seconds: 'gauge',
  kvstore_anti_entropy_last_exchange_repaired_records: 'gauge',
  kvstore_anti_entropy_last_exchange_failed: 'gauge',
};

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The sample lines of a metrics page. */
function samplesOf(page: string): Sample[] {
  const out: Sample[] = [];
  for (const line of page.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels` (undefined if none). */
function valueOf(samples: readonly Sample[], name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  expect(found.length, `${name}${JSON.stringify(labels)} matches at most one sample`).toBeLessThanOrEqual(1);
  return found[0]?.value;
}

/** The Prometheus endpoint of a real node (metricsListen on an ephemeral port). */
describe('GET /metrics', () => {
  let single: SingleNode;

  beforeAll(async () => {
    single = await SingleNode.start('m1', { metricsListen: '127.0.0.1:0' });
  });

  afterAll(async () => {
    await single.close();
  });

  it('serves the node state in the Prometheus text format, current with every scrape', async () => {
    const client = single.client();
    for (let i = 0; i < 5; i++) await client.put(`metrics/${i}`, 'v');
    await client.delete('metrics/0');
    const response = await fetch(`http://${single.node.metricsListen}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await response.text();
    expect(text).toMatch(/^# HELP kvstore_keys /m);
    expect(text).toMatch(/^# TYPE kvstore_keys gauge$/m);
    expect(text).toMatch(/^kvstore_keys 4$/m);
    expect(text).toMatch(/^kvstore_records 5$/m); // the tombstone counts as a record
    expect(text).toMatch(/^kvstore_info\{node_id="m1",version="[^"]+"\} 1$/m);
    expect(text).toMatch(/^# TYPE kvstore_read_repairs_total counter$/m);
    // The SDK's calls went over one OperationStream, still open: 6 operations answered, none waiting.
    expect(text).toMatch(/^kvstore_operation_streams_open 1$/m);
    expect(text).toMatch(/^kvstore_stream_operations_in_flight 0$/m);
    expect(text).toMatch(/^kvstore_stream_operations_total 6$/m);
    // Every sample line is `name{labels} value` with a numeric value (prom-client writes NaN as
    // `Nan`, as the process's event-loop mean before its first sample; Prometheus parses either).
    for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
      expect(line, line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|Nan|NaN|[+-]Inf)$/);
    }
    await client.put('metrics/9', 'v');
    expect(await (await fetch(`http://${single.node.metricsListen}/metrics`)).text()).toMatch(/^kvstore_keys 5$/m);
  });

  it('answers 404 for any other path or method', async () => {
    expect((await fetch(`http://${single.node.metricsListen}/`)).status).toBe(404);
    expect((await fetch(`http://${single.node.metricsListen}/metrics`, { method: 'POST' })).status).toBe(404);
  });

  it('keeps every metric the hand-written page had, with its type', async () => {
    const page = await (await fetch(`http://${single.node.metricsListen}/metrics`)).text();
    for (const [name, type] of Object.entries(metricsBeforePromClient)) {
      expect(page, name).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
      expect(page, name).toMatch(new RegExp(`^# TYPE ${name} ${type}$`, 'm'));
    }
  });

  it('has every metric it serves listed in docs/monitoring.md', async () => {
    const page = await (await fetch(`http://${single.node.metricsListen}/metrics`)).text();
    const docs = readFileSync(new URL('../../docs/monitoring.md', import.meta.url), 'utf8');
    const names = [...page.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(40);
    expect(names.filter((name) => !docs.includes(`\`${name}\``))).toEqual([]);
  });

  it('has per-method gRPC latency histograms with status codes, per-operation histograms, commit histograms and the process metrics', async () => {
    const raw = single.raw();
    await raw.put({ key: Buffer.from('hist/ok'), value: Buffer.from('v') });
    await expect(raw.put({ key: Buffer.alloc(0), value: Buffer.from('v') })).rejects.toThrow(/key is empty/);
    await raw.get({ key: Buffer.from('hist/ok') });
    const batch = await raw.batch({ operations: [{ put: { key: Buffer.from('hist/b'), value: Buffer.from('v') } }, { get: { key: Buffer.from('hist/b') } }, {}] });
    expect(batch.results.map((r) => r.error?.code ?? 0)).toEqual([0, 0, 3]);
    async function* requests(): AsyncGenerator<OperationStreamRequest> {
      yield { operations: [op(1, { put: { key: Buffer.from('hist/s'), value: Buffer.from('v'), consistency: Consistency.CONSISTENCY_UNSPECIFIED } })] };
      yield { operations: [op(2, { get: { key: Buffer.from('hist/s'), consistency: Consistency.CONSISTENCY_UNSPECIFIED } }), op(3, { delete: { key: Buffer.alloc(0), consistency: Consistency.CONSISTENCY_UNSPECIFIED } })] };
    }
    let answered = 0;
    for await (const message of raw.operationStream(requests())) answered += message.results.length;
    expect(answered).toBe(3);
    let listed = 0;
    for await (const page of raw.listKeys({ prefix: Buffer.from('hist/') })) listed += page.keys.length;
    expect(listed).toBe(3); // hist/ok, hist/b, hist/s

    const samples = samplesOf(await (await fetch(`http://${single.node.metricsListen}/metrics`)).text());
    const kv = { grpc_service: 'kvstore.v1.KVStore' };
    const put = { ...kv, grpc_method: 'Put', grpc_type: 'unary' };
    expect(valueOf(samples, 'kvstore_grpc_server_handling_seconds_count', { ...put, grpc_code: 'OK' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_handling_seconds_count', { ...put, grpc_code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_handling_seconds_bucket', { ...put, grpc_code: 'OK', le: '+Inf' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_handling_seconds_sum', { ...put, grpc_code: 'OK' })).toBeGreaterThan(0);
    expect(valueOf(samples, 'kvstore_grpc_server_handled_total', { ...put, grpc_code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_started_total', put)).toBe(2);
    expect(valueOf(samples, 'kvstore_grpc_server_handled_total', { ...kv, grpc_method: 'Get', grpc_code: 'OK' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_handled_total', { ...kv, grpc_method: 'Batch', grpc_code: 'OK' })).toBe(1);
    // Streams: one series per stream end, and their messages.
    const raws = { ...kv, grpc_method: 'OperationStream', grpc_type: 'bidi_stream' };
    expect(valueOf(samples, 'kvstore_grpc_server_handled_total', { ...raws, grpc_code: 'OK' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_msg_received_total', raws)).toBeGreaterThanOrEqual(2);
    expect(valueOf(samples, 'kvstore_grpc_server_msg_sent_total', raws)).toBeGreaterThanOrEqual(1);
    const list = { ...kv, grpc_method: 'ListKeys', grpc_type: 'server_stream' };
    expect(valueOf(samples, 'kvstore_grpc_server_handled_total', { ...list, grpc_code: 'OK' })).toBe(1);
    expect(valueOf(samples, 'kvstore_grpc_server_msg_sent_total', list)).toBeGreaterThanOrEqual(1);
    // Operations of Batch and OperationStream, by kind and code.
    const ops = 'kvstore_operation_duration_seconds_count';
    expect(valueOf(samples, ops, { rpc: 'Batch', operation: 'put', code: 'OK' })).toBe(1);
    expect(valueOf(samples, ops, { rpc: 'Batch', operation: 'get', code: 'OK' })).toBe(1);
    expect(valueOf(samples, ops, { rpc: 'Batch', operation: 'invalid', code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(valueOf(samples, ops, { rpc: 'OperationStream', operation: 'delete', code: 'INVALID_ARGUMENT' })).toBe(1);
    expect(valueOf(samples, ops, { rpc: 'OperationStream', operation: 'put', code: 'OK' })).toBeGreaterThanOrEqual(1);
    // Group commits: every write above went through at least one.
    expect(valueOf(samples, 'kvstore_storage_commit_duration_seconds_count')).toBeGreaterThan(0);
    expect(valueOf(samples, 'kvstore_storage_commit_records_sum')).toBeGreaterThanOrEqual(3);
    expect(valueOf(samples, 'kvstore_storage_commit_failures_total')).toBe(0);
    // The process: event loop, GC, heap, handles (prom-client's default metrics).
    for (const name of ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_active_handles_total', 'process_cpu_user_seconds_total', 'process_resident_memory_bytes']) {
      expect(valueOf(samples, name), name).toBeGreaterThanOrEqual(0);
    }
    expect(samples.some((s) => s.name === 'nodejs_gc_duration_seconds_count' || s.name === 'nodejs_heap_space_size_used_bytes')).toBe(true);
  });
});
