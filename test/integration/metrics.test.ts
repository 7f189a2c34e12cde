import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SingleNode } from '../helpers/single-node.js';

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
    // Every sample line is `name{labels} value` with a numeric value.
    for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
      expect(line, line).toMatch(/^[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$/);
    }
    await client.put('metrics/9', 'v');
    expect(await (await fetch(`http://${single.node.metricsListen}/metrics`)).text()).toMatch(/^kvstore_keys 5$/m);
  });

  it('answers 404 for any other path or method', async () => {
    expect((await fetch(`http://${single.node.metricsListen}/`)).status).toBe(404);
    expect((await fetch(`http://${single.node.metricsListen}/metrics`, { method: 'POST' })).status).toBe(404);
  });
});
