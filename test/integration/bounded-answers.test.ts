import { readFileSync } from 'node:fs';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, KVStoreDefinition, type KVStoreClient, type OperationStreamRequest, type OperationStreamResponse } from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../../src/common/push-queue.js';
import { inFlightBytesMaxDefault } from '../../src/config/schema.js';
import { streamBytesInFlightMax } from '../../src/server/operation-stream.js';
import { runningOperationsMaxDefault } from '../../src/server/running-operations.js';
import { op } from '../helpers/raw-stream.js';
import { SingleNode } from '../helpers/single-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Answers count against the in-flight budget (issue 14, item 9): a small request asking for many
 * large answers, as a Batch or on an OperationStream that is not read, must not take a node's
 * memory with it. On the main before this, a Batch of 1,024 gets of one 1 MiB key drove a node
 * to 4.5 GB resident, and 4,096 such gets on a stream held 4 GiB. Defaults throughout: the
 * budget is limits.maxInFlightBytes (128 MiB), values up to 1 MiB.
 */
const valueBytes = 1024 * 1024;
/** What the bounds allow the node to hold in answers: the budget, plus one answer per slot. */
const answerBytesBound = inFlightBytesMaxDefault + runningOperationsMaxDefault * valueBytes;
/**
 * Resident memory the node may reach above what it had before the test. The answers it may hold
 * (answerBytesBound, 256 MiB) plus room for the copies each answer passes through (record, value,
 * encoded message), well under the 4.5 GB measured without the bound.
 */
const residentGrowthMax = 1024 * 1024 * 1024;

function residentBytes(pid: number): { now: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(/\s(\d+) kB/.exec(status.split('\n').find((l) => l.startsWith(name))!)![1]) * 1024;
  return { now: field('VmRSS:'), peak: field('VmHWM:') };
}

describe('answers of Batch and OperationStream operations are bounded by the in-flight budget', () => {
  let single: SingleNode;
  let channel: Channel;
  let raw: KVStoreClient;
  const bigKey = Buffer.from('big/1');
  const get = { get: { key: bigKey, consistency: Consistency.CONSISTENCY_ONE } };

  const metric = async (name: string): Promise<number> => {
    const page = await (await fetch(`http://${single.node.metricsListen}/metrics`)).text();
    const line = page.split('\n').find((l) => l.startsWith(`${name} `));
    expect(line, `${name} on the metrics page`).toBeDefined();
    return Number(line!.split(' ')[1]);
  };

  beforeAll(async () => {
    single = await SingleNode.start('ans1', { metricsListen: '127.0.0.1:0', timeouts: { requestMs: 60_000 } });
    channel = createChannel(single.node.listen, undefined, { 'grpc.max_receive_message_length': -1 });
    raw = createClient(KVStoreDefinition, channel);
    await raw.put({ key: bigKey, value: Buffer.alloc(valueBytes, 'v'), consistency: Consistency.CONSISTENCY_ONE });
  });

  afterAll(async () => {
    channel?.close();
    await single?.close();
  });

  it('a Batch of 1,024 gets of one 1 MiB key: the answers that fit are sent, the rest are RESOURCE_EXHAUSTED and not run, and the node stays far below what an unbounded answer takes', async () => {
    const pid = single.node.pid!;
    const before = residentBytes(pid);
    const { results } = await raw.batch({ operations: Array.from({ length: 1024 }, () => get) });
    expect(results).toHaveLength(1024);
    const found = results.filter((r) => r.get?.found === true);
    const refused = results.filter((r) => r.error !== undefined);
    expect(found.length + refused.length).toBe(1024);
    for (const r of found) expect(r.get!.value.length).toBe(valueBytes);
    // Some answers fit; no more than the budget and the operations already running allow.
    expect(found.length).toBeGreaterThan(0);
    expect(found.length * valueBytes).toBeLessThanOrEqual(answerBytesBound);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) {
      expect(r.error!.code).toBe(8);
      expect(r.error!.message).toMatch(/node overloaded: not run: .*limits\.maxInFlightBytes = 134217728.*nothing was applied/);
    }
    const after = residentBytes(pid);
    expect(after.peak - before.now, `peak resident growth ${after.peak - before.now} bytes`).toBeLessThan(residentGrowthMax);
    // Everything was given back: the budget is empty and a next Batch runs whole.
    expect(await metric('kvstore_in_flight_request_bytes')).toBe(0);
    const next = await raw.batch({ operations: Array.from({ length: 8 }, () => get) });
    expect(next.results.every((r) => r.get?.found === true)).toBe(true);
  });

  it('an OperationStream of 2,048 such gets whose answers are not read: the node holds a bounded number of bytes, then answers every one once they are read', async () => {
    const pid = single.node.pid!;
    const before = residentBytes(pid);
    const requests = new PushQueue<OperationStreamRequest>();
    const controller = new AbortController();
    const responses = raw.operationStream(requests, { signal: controller.signal })[Symbol.asyncIterator]();
    try {
      const total = 2048;
      for (let m = 0; m < total / 1024; m++) requests.push({ operations: Array.from({ length: 1024 }, (_, i) => op(m * 1024 + i, get)) });
      // The client's call starts with the first read; this one read is all until the check.
      const first = responses.next();
      // Not reading: the node stops where its bounds say, and stays there.
      let held = -1;
      let sameFor = 0;
      await waitFor('the stream to stop growing while its answers are not read (the same reading 10 polls in a row)', async () => {
        const now = await metric('kvstore_in_flight_request_bytes');
        sameFor = now === held && now > 0 ? sameFor + 1 : 0;
        held = now;
        return sameFor >= 10;
      });
      expect(held).toBeLessThanOrEqual(streamBytesInFlightMax + runningOperationsMaxDefault * (valueBytes + 1024));
      const unread = await metric('kvstore_stream_operations_in_flight');
      expect(unread, 'operations still waiting to be answered').toBeGreaterThan(0);
      const during = residentBytes(pid);
      expect(during.peak - before.now, `peak resident growth ${during.peak - before.now} bytes`).toBeLessThan(residentGrowthMax);

      // Reading now: every operation is answered, with the value.
      const answered = new Set<number>();
      requests.close();
      for (let next = await first; next.done !== true; next = await responses.next()) {
        for (const { id, result } of (next.value as OperationStreamResponse).results) {
          expect(result?.get?.value.length, `operation ${id}`).toBe(valueBytes);
          answered.add(id);
        }
      }
      expect(answered.size).toBe(total);
      expect(await metric('kvstore_in_flight_request_bytes')).toBe(0);
    } finally {
      controller.abort();
      requests.close();
    }
  });
});
