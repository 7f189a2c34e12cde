import { createChannel, createClient, type Channel } from 'nice-grpc';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Consistency, KVStoreDefinition, type KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { coalescedOperationBytesMax, coalescedOperationsMax, OperationCoalescer } from '../../src/client/coalescer.js';
import { KvClient, KvError, Status } from '../../src/client/index.js';
import { bytes, deleteOp, expectDelete, expectGet, expectInvalid, expectPut, getOp, kindsOf, putOp, show } from '../helpers/batch-results.js';
import { collectKeys, expectCode, grpcErrorOf, kvErrorOf, SingleNode } from '../helpers/single-node.js';

/** Small key limit (so a too-long key is cheap to make); the default 1 MiB value limit. */
const maxKeyBytes = 64;
const maxValueBytes = 1024 * 1024;
/** The node's limit on operations per Batch (kvstore.proto, src/server/kv-service.ts). */
const batchOperationsMax = 1024;

/**
 * Watches the SDK's coalescer: which operations it was given (`submit`) and the size of every
 * Batch call it sent (`flush`, private: wrapped through the prototype). `afterSend` runs right
 * after a Batch call was started, before its answer can arrive.
 */
function watchCoalescer(): { submitted: () => number; batchSizes: number[]; afterSend: (hook: ((size: number) => void) | undefined) => void } {
  type Internals = { flush(): void; queue: unknown[] };
  const proto = OperationCoalescer.prototype as unknown as Internals;
  const originalFlush = proto.flush;
  expect(typeof originalFlush, 'OperationCoalescer.prototype.flush').toBe('function');
  const batchSizes: number[] = [];
  let hook: ((size: number) => void) | undefined;
  vi.spyOn(proto, 'flush').mockImplementation(function (this: Internals) {
    const size = this.queue.length;
    originalFlush.call(this);
    if (size > 0) {
      batchSizes.push(size);
      hook?.(size);
    }
  });
  const submit = vi.spyOn(OperationCoalescer.prototype, 'submit');
  return {
    submitted: () => submit.mock.calls.length,
    batchSizes,
    afterSend: (next) => {
      hook = next;
    },
  };
}

describe('Batch RPC: raw calls against one real node', () => {
  let single: SingleNode;
  let raw: KVStoreClient;
  let client: KvClient;
  /** Accepts answers of any size (the default gRPC client refuses answers over 4 MiB). */
  let bigChannel: Channel;
  let rawBig: KVStoreClient;

  beforeAll(async () => {
    single = await SingleNode.start('batch1', { limits: { maxKeyBytes, maxValueBytes } });
    raw = single.raw();
    client = single.client();
    bigChannel = createChannel(single.node.listen, undefined, { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
    rawBig = createClient(KVStoreDefinition, bigChannel);
  });

  afterAll(async () => {
    bigChannel?.close();
    await single?.close();
  });

  it('answers mixed put/get/delete operations in request order, each with its own kind and value', async () => {
    const first = await raw.batch({ operations: [putOp('mix/a', 'a1'), putOp('mix/b', 'b1'), putOp('mix/d', 'd1')] });
    expect(first.results).toHaveLength(3);
    for (const result of first.results) expectPut(result, false);

    const second = await raw.batch({
      operations: [
        putOp('mix/a', 'a2'), // replaces a1 (written by the previous call)
        getOp('mix/b'), // written by the previous call
        deleteOp('mix/d'), // exists
        getOp('mix/absent'),
        deleteOp('mix/never-written'),
        putOp('mix/new', 'n1', Consistency.CONSISTENCY_ALL),
        getOp('mix/absent-2', Consistency.CONSISTENCY_ONE),
      ],
    });
    const r = second.results;
    expect(r, r.map(show).join('\n')).toHaveLength(7);
    expectPut(r[0], true, 'a1');
    expectGet(r[1], true, 'b1');
    expectDelete(r[2], true);
    expectGet(r[3], false);
    expectDelete(r[4], false);
    expectPut(r[5], false);
    expectGet(r[6], false);

    // Every write took effect, as the unary RPCs see it.
    expect((await raw.get({ key: bytes('mix/a') })).value.toString()).toBe('a2');
    expect((await raw.get({ key: bytes('mix/d') })).found).toBe(false);
    expect((await raw.get({ key: bytes('mix/new') })).value.toString()).toBe('n1');
    const third = await raw.batch({ operations: [getOp('mix/a'), getOp('mix/d'), getOp('mix/new'), deleteOp('mix/d')] });
    expectGet(third.results[0], true, 'a2');
    expectGet(third.results[1], false);
    expectGet(third.results[2], true, 'n1');
    // Deleting a tombstone again answers found=false, as Delete does.
    expectDelete(third.results[3], false);
  });

  it('applies writes to one key in request order: the later one wins', async () => {
    const { results } = await raw.batch({
      operations: [
        putOp('order/k', 'first'),
        putOp('order/k', 'second'),
        putOp('order/gone', 'here'),
        deleteOp('order/gone'),
        deleteOp('order/back'),
        putOp('order/back', 'again'),
      ],
    });
    expect(results, results.map(show).join('\n')).toHaveLength(6);
    expectPut(results[0], false);
    // The second put replaced the first one (it was written before it, with an older version).
    expectPut(results[1], true, 'first');
    expectPut(results[2], false);
    expectDelete(results[3], true);
    expectDelete(results[4], false);
    expectPut(results[5], false);

    expect((await raw.get({ key: bytes('order/k') })).value.toString()).toBe('second');
    expect((await raw.get({ key: bytes('order/gone') })).found).toBe(false);
    expect((await raw.get({ key: bytes('order/back') })).value.toString()).toBe('again');
    // Many writes to one key: the last of them is what stays.
    const many = Array.from({ length: 50 }, (_, i) => putOp('order/many', `v${i}`));
    const answer = await raw.batch({ operations: many });
    expect(answer.results).toHaveLength(50);
    for (let i = 1; i < 50; i++) expectPut(answer.results[i], true, `v${i - 1}`);
    expect((await raw.get({ key: bytes('order/many') })).value.toString()).toBe('v49');
  });

  it('answers an invalid operation with its own INVALID_ARGUMENT error while the others succeed', async () => {
    await raw.put({ key: bytes('err/existing'), value: bytes('kept'), consistency: Consistency.CONSISTENCY_UNSPECIFIED });
    const { results } = await raw.batch({
      operations: [
        putOp('err/ok1', 'one'),
        putOp(Buffer.alloc(0), 'empty key'),
        getOp('err/existing'),
        putOp('err/too-big', Buffer.alloc(maxValueBytes + 1, 0x61)),
        {}, // no operation set
        deleteOp(Buffer.alloc(0)),
        getOp('k'.repeat(maxKeyBytes + 1)),
        putOp('err/existing', Buffer.alloc(maxValueBytes + 1, 0x62)),
        putOp('err/bad-consistency', 'v', 7 as Consistency),
        putOp('err/ok2', 'two'),
        deleteOp('err/absent'),
      ],
    });
    expect(results, results.map(show).join('\n')).toHaveLength(11);
    expectPut(results[0], false);
    expectInvalid(results[1], 'empty');
    expectGet(results[2], true, 'kept');
    expectInvalid(results[3], 'limits.maxValueBytes', String(maxValueBytes));
    expectInvalid(results[4], 'put', 'get', 'delete');
    expectInvalid(results[5], 'empty');
    expectInvalid(results[6], 'limits.maxKeyBytes', String(maxKeyBytes));
    expectInvalid(results[7], 'limits.maxValueBytes');
    expectInvalid(results[8], 'consistency');
    expectPut(results[9], false);
    expectDelete(results[10], false);

    // The valid writes happened; the refused ones wrote nothing and left the old value in place.
    const keys = (await collectKeys(client.listKeys({ prefix: 'err/' }))).map(String);
    expect(keys).toEqual(['err/existing', 'err/ok1', 'err/ok2']);
    expect((await raw.get({ key: bytes('err/existing') })).value.toString()).toBe('kept');
  });

  it('answers an operation that sets more than one of put/get/delete with INVALID_ARGUMENT and does not apply it', async () => {
    const { results } = await raw.batch({ operations: [{ ...putOp('multi/key', 'v'), ...getOp('multi/key') }, getOp('multi/key')] });
    expect(results[0]?.error?.code, show(results[0])).toBe(Status.INVALID_ARGUMENT);
    expect(results[0]?.error?.message).toContain('more than one');
    expect(results[1]?.get?.found, show(results[1])).toBe(false);
  });

  it(`refuses a batch of ${batchOperationsMax + 1} operations with RESOURCE_EXHAUSTED and writes none of them`, async () => {
    const operations = Array.from({ length: batchOperationsMax + 1 }, (_, i) => putOp(`over/${i}`, `v${i}`));
    const error = await grpcErrorOf(raw.batch({ operations }));
    expectCode(error, Status.RESOURCE_EXHAUSTED);
    expect(error.details).toContain(String(batchOperationsMax));
    expect((await raw.get({ key: bytes('over/0') })).found).toBe(false);
    expect((await raw.get({ key: bytes(`over/${batchOperationsMax}`) })).found).toBe(false);
    expect(await collectKeys(client.listKeys({ prefix: 'over/' }))).toEqual([]);

    // Exactly at the limit is accepted, and every operation is answered.
    const atLimit = await raw.batch({ operations: operations.slice(0, batchOperationsMax) });
    expect(atLimit.results).toHaveLength(batchOperationsMax);
    atLimit.results.forEach((result) => expectPut(result, false));
    expect((await collectKeys(client.listKeys({ prefix: 'over/' }))).length).toBe(batchOperationsMax);
    expect((await raw.get({ key: bytes(`over/${batchOperationsMax - 1}`) })).value.toString()).toBe(`v${batchOperationsMax - 1}`);
  });

  it('answers an empty batch with an empty result list', async () => {
    expect(await raw.batch({ operations: [] })).toEqual({ results: [] });
  });

  it('answers a batch whose answer is far over 4 MiB (8 puts replacing ~1 MiB values)', async () => {
    const count = 8;
    const large = (i: number): Buffer => Buffer.alloc(maxValueBytes, 0x41 + i);
    for (let i = 0; i < count; i++) {
      await raw.put({ key: bytes(`large/${i}`), value: large(i), consistency: Consistency.CONSISTENCY_UNSPECIFIED });
    }
    const { results } = await rawBig.batch({ operations: Array.from({ length: count }, (_, i) => putOp(`large/${i}`, `small${i}`)) });
    expect(results).toHaveLength(count);
    let answered = 0;
    results.forEach((result, i) => {
      expect(kindsOf(result), show(result)).toEqual(['put']);
      expect(result.put!.found).toBe(true);
      expect(result.put!.value.equals(large(i)), `old value of large/${i}`).toBe(true);
      answered += result.put!.value.length;
    });
    expect(answered).toBeGreaterThan(4 * 1024 * 1024);
    for (let i = 0; i < count; i++) expect((await raw.get({ key: bytes(`large/${i}`) })).value.toString()).toBe(`small${i}`);
  });
});

describe('SDK: concurrent put/get/delete coalesced into Batch calls', () => {
  let single: SingleNode;
  let client: KvClient;

  beforeAll(async () => {
    single = await SingleNode.start('batch2', { limits: { maxKeyBytes, maxValueBytes } });
    // Batch calls, not the OperationStream (the default; test/integration/operation-stream.test.ts).
    client = single.client({ operationStream: false });
    // Connect first, so the concurrent calls below all find the channel ready.
    await client.put('warmup', 'w');
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await single?.close();
  });

  it('gives each of 200 concurrent callers its own result, through batches of several calls', async () => {
    const watch = watchCoalescer();
    const n = 200;
    const keys = Array.from({ length: n }, (_, i) => `sdk/${String(i).padStart(3, '0')}`);

    const created = await Promise.all(keys.map((key, i) => client.put(key, `first-${i}`)));
    expect(created.every((r) => !r.found), JSON.stringify(created.filter((r) => r.found))).toBe(true);
    // Each caller gets the old value of its own key back.
    const replaced = await Promise.all(keys.map((key, i) => client.put(key, `second-${i}`)));
    replaced.forEach((r, i) => {
      expect(r.found, keys[i]).toBe(true);
      expect(r.oldValue?.toString(), keys[i]).toBe(`first-${i}`);
    });
    const read = await Promise.all(keys.map((key) => client.getString(key)));
    expect(read).toEqual(keys.map((_, i) => `second-${i}`));
    const absent = await Promise.all(keys.map((key) => client.get(`${key}/absent`)));
    expect(absent.every((v) => v === undefined)).toBe(true);
    const deleted = await Promise.all(keys.map((key, i) => (i % 2 === 0 ? client.delete(key) : client.delete(`${key}/absent`))));
    expect(deleted).toEqual(keys.map((_, i) => i % 2 === 0));
    expect((await collectKeys(client.listKeys({ prefix: 'sdk/' }))).map(String)).toEqual(keys.filter((_, i) => i % 2 === 1));

    // Every call went through the coalescer, and they shared Batch calls.
    expect(watch.submitted()).toBe(5 * n);
    expect(watch.batchSizes.reduce((a, b) => a + b, 0)).toBe(5 * n);
    expect(Math.max(...watch.batchSizes), `batch sizes ${watch.batchSizes.join(',')}`).toBeGreaterThan(1);
    expect(watch.batchSizes.length).toBeLessThan(5 * n);
  });

  it(`splits more than ${coalescedOperationsMax} concurrent calls into batches of at most ${coalescedOperationsMax}`, async () => {
    const watch = watchCoalescer();
    const n = 2 * coalescedOperationsMax + 88;
    const keys = Array.from({ length: n }, (_, i) => `split/${i}`);
    await Promise.all(keys.map((key) => client.put(key, key)));
    const read = await Promise.all(keys.map((key) => client.getString(key)));
    expect(read).toEqual(keys);
    expect(watch.batchSizes.reduce((a, b) => a + b, 0)).toBe(2 * n);
    expect(Math.max(...watch.batchSizes), `batch sizes ${watch.batchSizes.join(',')}`).toBeLessThanOrEqual(coalescedOperationsMax);
  });

  it('rejects only the invalid calls of a burst (key over maxKeyBytes), with INVALID_ARGUMENT; the rest resolve', async () => {
    const watch = watchCoalescer();
    const n = 100;
    const isBad = (i: number): boolean => i % 7 === 3;
    const keyOf = (i: number): string => (isBad(i) ? `bad/${String(i).padStart(3, '0')}/${'x'.repeat(maxKeyBytes)}` : `mixed/${i}`);

    const puts = await Promise.allSettled(Array.from({ length: n }, (_, i) => client.put(keyOf(i), `v${i}`)));
    const gets = await Promise.allSettled(Array.from({ length: n }, (_, i) => client.getString(keyOf(i))));
    const dels = await Promise.allSettled(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? client.delete(keyOf(i)) : Promise.resolve(null))));

    for (const [operation, settled] of [
      ['put', puts],
      ['get', gets],
      ['delete', dels],
    ] as const) {
      settled.forEach((outcome, i) => {
        if (operation === 'delete' && i % 2 === 1) return;
        if (isBad(i)) {
          expect(outcome.status, `${operation} ${i}`).toBe('rejected');
          const error = (outcome as PromiseRejectedResult).reason as unknown;
          expect(KvError.isKvError(error), String(error)).toBe(true);
          const kvError = error as KvError;
          expectCode(kvError, Status.INVALID_ARGUMENT);
          expect(kvError.details).toContain('limits.maxKeyBytes');
          expect(kvError.operation).toBe(operation);
          expect(kvError.endpoint).toBe(single.node.listen);
          expect(kvError.unreachable).toBe(false);
        } else {
          expect(outcome.status, `${operation} ${i}: ${String((outcome as PromiseRejectedResult).reason)}`).toBe('fulfilled');
        }
      });
    }
    puts.forEach((outcome, i) => {
      if (!isBad(i)) expect((outcome as PromiseFulfilledResult<{ found: boolean }>).value).toEqual({ found: false });
    });
    gets.forEach((outcome, i) => {
      if (!isBad(i)) expect((outcome as PromiseFulfilledResult<string | undefined>).value).toBe(`v${i}`);
    });
    dels.forEach((outcome, i) => {
      if (!isBad(i) && i % 2 === 0) expect((outcome as PromiseFulfilledResult<boolean | null>).value).toBe(true);
    });
    // The invalid calls shared batches with valid ones: the errors are per operation.
    expect(watch.batchSizes.length).toBeLessThan(watch.submitted());
    const listed = (await collectKeys(client.listKeys({ prefix: 'mixed/' }))).map(String).sort();
    const expected = Array.from({ length: n }, (_, i) => i)
      .filter((i) => !isBad(i) && i % 2 === 1)
      .map((i) => `mixed/${i}`)
      .sort();
    expect(listed).toEqual(expected);
  });

  it('rejects a call whose signal aborts right after it is made with CANCELLED; concurrent calls resolve', async () => {
    const controller = new AbortController();
    const others = Array.from({ length: 20 }, (_, i) => client.put(`abort1/${i}`, `v${i}`));
    const aborted = client.put('abort1/cancelled', 'never mind', { signal: controller.signal });
    controller.abort();
    const error = await kvErrorOf(aborted);
    expectCode(error, Status.CANCELLED);
    expect(error.operation).toBe('put');
    const results = await Promise.all(others);
    expect(results.every((r) => !r.found)).toBe(true);
    expect(await Promise.all(Array.from({ length: 20 }, (_, i) => client.getString(`abort1/${i}`)))).toEqual(
      Array.from({ length: 20 }, (_, i) => `v${i}`),
    );
  });

  it('does not send a call whose signal aborts after it is queued but before its batch is sent: CANCELLED, not applied', async () => {
    await client.put('abort0/key', 'before');
    const controller = new AbortController();
    // Runs before the coalescer's own setImmediate flush: the call is queued, not yet sent.
    setImmediate(() => controller.abort());
    const error = await kvErrorOf(client.put('abort0/key', 'after', { signal: controller.signal }));
    expectCode(error, Status.CANCELLED);
    expect(await client.getString('abort0/key')).toBe('before');
  });

  it('rejects a call whose signal aborts while its Batch call is in flight with CANCELLED; the others in that batch resolve', async () => {
    const watch = watchCoalescer();
    await client.put('abort2/read-me', 'readable');
    const controller = new AbortController();
    // Abort as soon as the Batch call carrying the operations below has been started.
    let sentWith = 0;
    watch.afterSend((size) => {
      watch.afterSend(undefined);
      sentWith = size;
      controller.abort();
    });
    const others = Array.from({ length: 20 }, (_, i) => client.put(`abort2/${i}`, `v${i}`));
    const abortedGet = client.get('abort2/read-me', { signal: controller.signal });
    const abortedPut = client.put('abort2/cancelled', 'maybe', { signal: controller.signal });
    const moreOthers = Array.from({ length: 20 }, (_, i) => client.getString(i === 0 ? 'abort2/read-me' : `abort2/absent-${i}`));

    for (const [operation, call] of [
      ['get', abortedGet],
      ['put', abortedPut],
    ] as const) {
      const error = await kvErrorOf(call);
      expectCode(error, Status.CANCELLED);
      expect(error.operation).toBe(operation);
    }
    // The aborted calls were in the batch that was sent (which is not cancelled for them).
    expect(sentWith).toBe(42);
    expect((await Promise.all(others)).every((r) => !r.found)).toBe(true);
    const reads = await Promise.all(moreOthers);
    expect(reads[0]).toBe('readable');
    expect(reads.slice(1).every((v) => v === undefined)).toBe(true);
    // The client is still usable afterwards.
    expect(await client.getString('abort2/0')).toBe('v0');
  });

  it('sends a value over the 64 KiB threshold as its own unary call, and it round-trips', async () => {
    const watch = watchCoalescer();
    const value = Buffer.alloc(100 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 17) & 0xff;
    expect(value.length).toBeGreaterThan(coalescedOperationBytesMax);

    const [bigPut, smallPuts] = await Promise.all([
      client.put('big/100k', value),
      Promise.all(Array.from({ length: 10 }, (_, i) => client.put(`big/small-${i}`, 's'))),
    ]);
    expect(bigPut).toEqual({ found: false });
    expect(smallPuts.every((r) => !r.found)).toBe(true);
    // Only the small puts went through the coalescer.
    expect(watch.submitted()).toBe(10);

    // A get carries only the key, so it is coalesced; its 100 KiB answer comes back whole.
    const read = await client.get('big/100k');
    expect(read?.length).toBe(value.length);
    expect(read!.equals(value)).toBe(true);
    const replaced = await client.put('big/100k', 'small now');
    expect(replaced.found).toBe(true);
    expect(replaced.oldValue!.equals(value)).toBe(true);
    expect(await client.getString('big/100k')).toBe('small now');
    // The get, the small put and the getString: all three coalesced.
    expect(watch.submitted()).toBe(13);

    // Exactly at the threshold (key + value) still goes through a batch.
    const key = 'big/at-threshold';
    const atThreshold = Buffer.alloc(coalescedOperationBytesMax - key.length, 0x5a);
    await client.put(key, atThreshold);
    expect(watch.submitted()).toBe(14);
    expect((await client.get(key))!.equals(atThreshold)).toBe(true);
  });

  it('answers coalesced calls whose combined answer is far over 4 MiB (old values and reads of ~1 MiB each)', async () => {
    const count = 8;
    const large = (i: number): Buffer => Buffer.alloc(maxValueBytes, 0x61 + i);
    for (let i = 0; i < count; i++) await client.put(`sdkbig/${i}`, large(i));
    const watch = watchCoalescer();
    const reads = await Promise.all(Array.from({ length: count }, (_, i) => client.get(`sdkbig/${i}`)));
    reads.forEach((read, i) => expect(read?.equals(large(i)), `sdkbig/${i}`).toBe(true));
    const replaced = await Promise.all(Array.from({ length: count }, (_, i) => client.put(`sdkbig/${i}`, `small${i}`)));
    replaced.forEach((r, i) => {
      expect(r.found).toBe(true);
      expect(r.oldValue?.equals(large(i)), `old value of sdkbig/${i}`).toBe(true);
    });
    expect(watch.submitted()).toBe(2 * count);
    expect(Math.max(...watch.batchSizes), `batch sizes ${watch.batchSizes.join(',')}`).toBeGreaterThan(4);
  });
});

describe('SDK: the coalesce option', () => {
  let single: SingleNode;

  beforeAll(async () => {
    single = await SingleNode.start('batch3', { limits: { maxKeyBytes, maxValueBytes } });
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await single?.close();
  });

  it('refuses a coalesce option that is not a boolean', () => {
    const endpoints = [single.node.listen];
    for (const bad of ['yes', 1, null, {}]) {
      expect(() => new KvClient({ endpoints, coalesce: bad as never }), JSON.stringify(bad)).toThrow(/coalesce/);
    }
    // Booleans and absent are fine.
    for (const good of [true, false, undefined]) new KvClient({ endpoints, coalesce: good }).close();
  });

  it('with coalesce: false, put/get/delete work as unary calls, concurrent ones included', async () => {
    const watch = watchCoalescer();
    const client = single.client({ coalesce: false });
    expect(await client.put('plain/a', 'one')).toEqual({ found: false });
    const replaced = await client.put('plain/a', 'two');
    expect(replaced.found).toBe(true);
    expect(replaced.oldValue?.toString()).toBe('one');
    expect(await client.getString('plain/a')).toBe('two');
    expect(await client.delete('plain/a')).toBe(true);
    expect(await client.get('plain/a')).toBeUndefined();
    expect(await client.delete('plain/a')).toBe(false);

    const keys = Array.from({ length: 50 }, (_, i) => `plain/${i}`);
    await Promise.all(keys.map((key) => client.put(key, key)));
    expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys);
    const error = await kvErrorOf(client.get('k'.repeat(maxKeyBytes + 1)));
    expectCode(error, Status.INVALID_ARGUMENT);
    expect(error.details).toContain('limits.maxKeyBytes');

    expect(watch.submitted()).toBe(0);
    expect(watch.batchSizes).toEqual([]);

    // A coalescing client sees the same data.
    expect(await single.client().getString('plain/49')).toBe('plain/49');
    expect(watch.submitted()).toBe(1);
  });
});
