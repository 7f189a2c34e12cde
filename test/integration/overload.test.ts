import { createChannel, createClient, Status, type Channel } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, KVStoreDefinition, type KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { TestCluster } from '../helpers/cluster.js';
import { expectGet, expectPut, getOp, putOp } from '../helpers/batch-results.js';
import { op, RawStream } from '../helpers/raw-stream.js';
import { expectCode, grpcErrorOf, kvErrorOf } from '../helpers/single-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The node-wide budget of request bytes in flight (limits.maxInFlightBytes,
 * src/server/in-flight-budget.ts) on real nodes: a put at ALL to a cluster whose n3 is frozen
 * (SIGSTOP) stays in flight on n1 and holds its bytes, so what comes next meets a full budget.
 * As in operation-stream.test.ts, peerCallMs is long so n1 does not give up on n3 meanwhile.
 */
const maxInFlightBytes = 1_000_000;
const heldValueBytes = 700_000;
const nextValueBytes = 400_000;

describe('limits.maxInFlightBytes: a node under more request bytes than its budget', () => {
  let cluster: TestCluster;
  let channel: Channel;
  let raw: KVStoreClient;
  const streams: RawStream[] = [];

  /** A value of `bytes` bytes whose content says which write it is. */
  const valueOf = (bytes: number, fill: string): Buffer => Buffer.alloc(bytes, fill);

  const metric = async (name: string): Promise<number> => {
    const page = await (await fetch(`http://${cluster.node('n1').metricsListen}/metrics`)).text();
    const line = page.split('\n').find((l) => l.startsWith(`${name} `));
    expect(line, `${name} on the metrics page`).toBeDefined();
    return Number(line!.split(' ')[1]);
  };

  beforeAll(async () => {
    cluster = await TestCluster.start({
      size: 3,
      replicationFactor: 3,
      config: {
        timeouts: { requestMs: 60_000, peerCallMs: 60_000 },
        antiEntropy: { intervalSeconds: 0, maxRecordsPerSecond: 20_000 },
        limits: { maxInFlightBytes },
        metricsListen: '127.0.0.1:0',
      },
    });
    await cluster.client('n1').put('overload/seed', 'seeded', { consistency: 'all' });
    channel = createChannel(cluster.node('n1').listen);
    raw = createClient(KVStoreDefinition, channel);
  });

  afterAll(async () => {
    for (const stream of streams.splice(0)) stream.cancel();
    channel?.close();
    cluster?.node('n3').resume();
    await cluster?.stop();
  });

  it('refuses unary and Batch writes with RESOURCE_EXHAUSTED naming the limit, holds back stream messages, and serves all again once the held write ends; nothing refused is applied', async () => {
    expect(await metric('kvstore_in_flight_request_bytes_max')).toBe(maxInFlightBytes);
    const held = new RawStream(raw);
    const waiting = new RawStream(raw);
    streams.push(held, waiting);

    cluster.node('n3').pause();
    try {
      held.send([op(1, putOp('overload/held', valueOf(heldValueBytes, 'h'), Consistency.CONSISTENCY_ALL), 30_000)]);
      await waitFor('the held put in flight on n1', async () => (await metric('kvstore_in_flight_request_bytes')) >= heldValueBytes, 10_000);

      // 700,000 + 400,000 bytes do not fit in 1,000,000: refused before anything runs.
      const unary = await grpcErrorOf(raw.put({ key: Buffer.from('overload/unary'), value: valueOf(nextValueBytes, 'u'), consistency: Consistency.CONSISTENCY_ONE }));
      expectCode(unary, Status.RESOURCE_EXHAUSTED);
      expect(unary.details).toMatch(/limits\.maxInFlightBytes = 1000000.*nothing was applied/);
      const batch = await grpcErrorOf(raw.batch({ operations: [putOp('overload/batch', valueOf(nextValueBytes, 'b'), Consistency.CONSISTENCY_ONE)] }));
      expectCode(batch, Status.RESOURCE_EXHAUSTED);
      expect(await metric('kvstore_overload_refused_calls_total')).toBe(2);

      // A small read still fits beside the held write.
      expect((await raw.get({ key: Buffer.from('overload/seed'), consistency: Consistency.CONSISTENCY_ONE })).value.toString()).toBe('seeded');

      // A stream message that does not fit waits (its stream is not read meanwhile) instead of failing.
      waiting.send([op(2, putOp('overload/streamed', valueOf(nextValueBytes, 's'), Consistency.CONSISTENCY_ONE), 30_000)]);
      await waitFor('the stream message waiting for room', async () => (await metric('kvstore_overload_waited_stream_messages_total')) >= 1, 10_000);
      expect(waiting.answersTo(2)).toEqual([]);
      expect(held.answersTo(1)).toEqual([]);
    } finally {
      cluster.node('n3').resume();
    }

    // n3 answers, the held put completes and frees its bytes, and the waiting message runs.
    await held.waitForAnswers([1]);
    expectPut(held.result(1), false);
    await waiting.waitForAnswers([2]);
    expectPut(waiting.result(2), false);
    await waitFor('the budget drained', async () => (await metric('kvstore_in_flight_request_bytes')) === 0, 10_000);

    // Served normally again; the refused writes were never applied.
    await raw.put({ key: Buffer.from('overload/after'), value: valueOf(nextValueBytes, 'a'), consistency: Consistency.CONSISTENCY_QUORUM });
    const check = new RawStream(raw);
    streams.push(check);
    check.send([
      op(3, getOp('overload/unary', Consistency.CONSISTENCY_ALL)),
      op(4, getOp('overload/batch', Consistency.CONSISTENCY_ALL)),
      op(5, getOp('overload/streamed', Consistency.CONSISTENCY_QUORUM)),
      op(6, getOp('overload/held', Consistency.CONSISTENCY_ALL)),
      op(7, getOp('overload/after', Consistency.CONSISTENCY_QUORUM)),
    ]);
    await check.waitForAnswers([3, 4, 5, 6, 7]);
    expectGet(check.result(3), false);
    expectGet(check.result(4), false);
    expectGet(check.result(5), true, 's'.repeat(nextValueBytes));
    expectGet(check.result(6), true, 'h'.repeat(heldValueBytes));
    expectGet(check.result(7), true, 'a'.repeat(nextValueBytes));
  });

  it('the SDK sends a refused call again after a pause until the node has room (nothing was applied), or fails it at its deadline saying so', async () => {
    const held = new RawStream(raw);
    streams.push(held);
    // Over coalescedOperationBytesMax (64 KiB): the SDK sends these puts as unary calls.
    const sdk = cluster.client('n1', { deadlineMs: 30_000 });
    let settled = false;
    let pending: Promise<unknown> | undefined;
    cluster.node('n3').pause();
    try {
      held.send([op(1, putOp('overload/held-2', valueOf(heldValueBytes, 'h'), Consistency.CONSISTENCY_ALL), 30_000)]);
      await waitFor('the held put in flight on n1', async () => (await metric('kvstore_in_flight_request_bytes')) >= heldValueBytes, 10_000);

      // A short deadline: refused, resent, refused... then DEADLINE_EXCEEDED. If the deadline
      // passes during a pause the SDK knows nothing was applied and says so; if it passes while a
      // resend is on the wire (rare, on a loaded machine) it cannot know, and says the write may
      // be applied. Either way the node refused every attempt: the key is absent below.
      const refusedBefore = await metric('kvstore_overload_refused_calls_total');
      const late = await kvErrorOf(sdk.put('overload/sdk-late', valueOf(nextValueBytes, 'l'), { consistency: 'one', deadlineMs: 1_500 }));
      expectCode(late, Status.DEADLINE_EXCEEDED);
      expect(late.details).toMatch(/the node stayed overloaded for 1500ms \(refused \d+ times; nothing was applied\)|did not complete within 1500ms; the write may still be applied/);
      expect(await metric('kvstore_overload_refused_calls_total')).toBeGreaterThanOrEqual(refusedBefore + 3);

      // Over Batch calls (operationStream: false): six 60 KB puts made in one turn share one Batch
      // call, which does not fit beside the held write. Refused whole, each put is sent again
      // after its own pause, fits, and succeeds (at ONE) while the held write still waits.
      const batchSdk = cluster.client('n1', { deadlineMs: 30_000, operationStream: false });
      const refusedBeforeBatch = await metric('kvstore_overload_refused_calls_total');
      const batched = await Promise.all(Array.from({ length: 6 }, (_, i) => batchSdk.put(`overload/batched-${i}`, valueOf(60_000, String(i)), { consistency: 'one' })));
      expect(batched.map((r) => r.found)).toEqual([false, false, false, false, false, false]);
      expect(await metric('kvstore_overload_refused_calls_total')).toBeGreaterThan(refusedBeforeBatch);
      expect(held.answersTo(1)).toEqual([]);

      // A long deadline: the put keeps being resent while the budget is full.
      const refusedNow = await metric('kvstore_overload_refused_calls_total');
      pending = sdk.put('overload/sdk', valueOf(nextValueBytes, 'k'), { consistency: 'one' }).finally(() => (settled = true));
      await waitFor('the SDK put refused and resent', async () => (await metric('kvstore_overload_refused_calls_total')) >= refusedNow + 2, 10_000);
      expect(settled).toBe(false);
    } finally {
      cluster.node('n3').resume();
    }
    // Room again once the held put completes: the resent put goes through.
    await held.waitForAnswers([1]);
    expect(await pending).toEqual({ found: false });
    expect((await sdk.get('overload/sdk', { consistency: 'all' }))?.equals(valueOf(nextValueBytes, 'k'))).toBe(true);
    expect(await sdk.get('overload/sdk-late', { consistency: 'all' })).toBeUndefined();
    for (let i = 0; i < 6; i++) expect((await sdk.get(`overload/batched-${i}`, { consistency: 'all' }))?.equals(valueOf(60_000, String(i)))).toBe(true);
  });
});

