import { ClientError, createServer, Metadata, ServerError, Status, type CallContext, type Server } from 'nice-grpc';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Consistency, KVStoreDefinition, type KVStoreClient, type KVStoreServiceImplementation, type OperationStreamRequest } from '../../gen/kvstore/v1/kvstore.js';
import { KvClient, KvError } from '../../src/client/index.js';
import { deadlineMetadataKey } from '../../src/common/deadline-header.js';
import { lateRequestToleranceMsDefault } from '../../src/server/late-requests.js';
import { bytes, deleteOp, expectDelete, expectError, expectGet, expectPut, getOp, putOp } from '../helpers/batch-results.js';
import { op, RawStream } from '../helpers/raw-stream.js';
import { expectCode, grpcErrorOf, kvErrorOf, SingleNode } from '../helpers/single-node.js';

/**
 * Late requests (kvstore.proto, "Late requests"; src/server/late-requests.ts): a write read by
 * the node more than its tolerance (clock.maxDriftMs, 60 s by default) after its client's
 * absolute deadline is answered DEADLINE_EXCEEDED and not applied. Requests are made "late" by
 * sending a deadline in the past, which the node cannot tell from a request held up that long.
 */

const unspecified = Consistency.CONSISTENCY_UNSPECIFIED;
/** Well past the tolerance: the put "the client gave up on during a partition". */
const twoMinutesMs = 2 * 60_000;
/** Within the tolerance (clock skew, as far as the node can tell). */
const fiveSecondsMs = 5_000;
/** The refusal's text (the details of the DEADLINE_EXCEEDED status). */
const refusalText = /^request arrived \d+ ms after its client's deadline \(\d{4}-\d\d-\d\dT[0-9:.]+Z\); not applied: the client has given up on it/;

const deadlineMetadata = (deadlineUnixMs: number | string): Metadata => Metadata().set(deadlineMetadataKey, String(deadlineUnixMs));

describe('late requests: raw clients against one real node', () => {
  let single: SingleNode;
  let raw: KVStoreClient;
  const streams: RawStream[] = [];

  beforeAll(async () => {
    expect(twoMinutesMs).toBeGreaterThan(lateRequestToleranceMsDefault);
    expect(fiveSecondsMs).toBeLessThan(lateRequestToleranceMsDefault);
    single = await SingleNode.start('late1');
    raw = single.raw();
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.cancel();
  });

  afterAll(async () => {
    await single?.close();
  });

  const valueOf = async (key: string): Promise<string | undefined> => {
    const got = await raw.get({ key: bytes(key), consistency: unspecified });
    return got.found ? got.value.toString('utf8') : undefined;
  };

  it('refuses a Put whose metadata deadline passed 2 minutes ago with DEADLINE_EXCEEDED, and does not apply it', async () => {
    await raw.put({ key: bytes('late/put'), value: bytes('acknowledged'), consistency: unspecified });
    const error = await grpcErrorOf(raw.put({ key: bytes('late/put'), value: bytes('given-up'), consistency: unspecified }, { metadata: deadlineMetadata(Date.now() - twoMinutesMs) }));
    expectCode(error, Status.DEADLINE_EXCEEDED);
    expect(error.details).toMatch(refusalText);
    expect(await valueOf('late/put')).toBe('acknowledged');
  });

  it('refuses a late Delete, Get and Batch the same way; a Batch is refused whole', async () => {
    await raw.put({ key: bytes('late/del'), value: bytes('kept'), consistency: unspecified });
    const past = (): { metadata: Metadata } => ({ metadata: deadlineMetadata(Date.now() - twoMinutesMs) });

    const del = await grpcErrorOf(raw.delete({ key: bytes('late/del'), consistency: unspecified }, past()));
    expectCode(del, Status.DEADLINE_EXCEEDED);
    expect(del.details).toMatch(refusalText);
    const get = await grpcErrorOf(raw.get({ key: bytes('late/del'), consistency: unspecified }, past()));
    expectCode(get, Status.DEADLINE_EXCEEDED);
    const batch = await grpcErrorOf(raw.batch({ operations: [putOp('late/batch', 'given-up'), deleteOp('late/del'), getOp('late/del')] }, past()));
    expectCode(batch, Status.DEADLINE_EXCEEDED);
    expect(batch.details).toMatch(refusalText);

    expect(await valueOf('late/del')).toBe('kept');
    expect(await valueOf('late/batch')).toBeUndefined();
  });

  it('applies a Put whose deadline passed by less than the tolerance (clock skew), one with a future deadline, and one without the metadata', async () => {
    const skewed = await raw.put({ key: bytes('late/skew'), value: bytes('applied'), consistency: unspecified }, { metadata: deadlineMetadata(Date.now() - fiveSecondsMs) });
    expect(skewed.found).toBe(false);
    expect(await valueOf('late/skew')).toBe('applied');

    await raw.put({ key: bytes('late/future'), value: bytes('applied'), consistency: unspecified }, { metadata: deadlineMetadata(Date.now() + 10_000) });
    expect(await valueOf('late/future')).toBe('applied');

    // Other clients and buf curl send no absolute deadline: only grpc-timeout (none here) applies.
    await raw.put({ key: bytes('late/none'), value: bytes('applied'), consistency: unspecified });
    expect(await valueOf('late/none')).toBe('applied');
    const batch = await raw.batch({ operations: [putOp('late/none-batch', 'applied')] }, { metadata: deadlineMetadata('0') });
    expectPut(batch.results[0], false);
    expect(await valueOf('late/none-batch')).toBe('applied');
  });

  it('answers INVALID_ARGUMENT for a deadline that is not a decimal number of milliseconds, and applies nothing', async () => {
    for (const bad of ['soon', '-5', '1.5e12', '12345678901234567']) {
      const error = await grpcErrorOf(raw.put({ key: bytes('late/bad'), value: bytes('x'), consistency: unspecified }, { metadata: deadlineMetadata(bad) }));
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(error.details, bad).toContain(deadlineMetadataKey);
    }
    expect(await valueOf('late/bad')).toBeUndefined();
  });

  it('answers an OperationStream operation with a deadline_unix_ms 2 minutes past DEADLINE_EXCEEDED without running it; the others on the stream are answered', async () => {
    await raw.put({ key: bytes('late/s-put'), value: bytes('acknowledged'), consistency: unspecified });
    await raw.put({ key: bytes('late/s-del'), value: bytes('kept'), consistency: unspecified });
    const stream = new RawStream(raw);
    streams.push(stream);
    const now = Date.now();
    const past = BigInt(now - twoMinutesMs);
    const ids = { latePut: 1, lateDel: 2, lateGet: 3, skewedPut: 4, futurePut: 5, plainGet: 6, nextMessagePut: 7 };
    stream.send([
      op(ids.latePut, putOp('late/s-put', 'given-up'), 0, past),
      op(ids.skewedPut, putOp('late/s-skew', 'applied'), 0, BigInt(now - fiveSecondsMs)),
      op(ids.lateDel, deleteOp('late/s-del'), 0, past),
      op(ids.futurePut, putOp('late/s-future', 'applied'), 5_000, BigInt(now + 5_000)),
      op(ids.lateGet, getOp('late/s-put'), 0, past),
      op(ids.plainGet, getOp('late/s-del')),
    ]);
    stream.send([op(ids.nextMessagePut, putOp('late/s-next', 'applied'))]);
    await stream.waitForAnswers(Object.values(ids));

    for (const id of [ids.latePut, ids.lateDel, ids.lateGet]) {
      expectError(stream.result(id), Status.DEADLINE_EXCEEDED, "after its client's deadline", 'not applied');
      expect(stream.result(id).error!.message).toMatch(refusalText);
    }
    expectPut(stream.result(ids.skewedPut), false);
    expectPut(stream.result(ids.futurePut), false);
    expectGet(stream.result(ids.plainGet), true, 'kept');
    expectPut(stream.result(ids.nextMessagePut), false);
    expect(stream.hasEnded).toBe(false);

    expect(await valueOf('late/s-put')).toBe('acknowledged');
    expect(await valueOf('late/s-del')).toBe('kept');
    expect(await valueOf('late/s-skew')).toBe('applied');
    expect(await valueOf('late/s-future')).toBe('applied');
    expect(await valueOf('late/s-next')).toBe('applied');
  });
});

/** The three ways the SDK sends a put/get/delete. */
const transports = [
  { name: 'OperationStream (default)', options: {} },
  { name: 'Batch calls', options: { operationStream: false } },
  { name: 'unary calls', options: { coalesce: false } },
] as const;

/**
 * A proxy in front of the node that records the absolute deadline of every put/get/delete the
 * SDK sends (metadata or stream field) and forwards it, moved by `shiftMs` (negative: as if the
 * request had been held up that long on its way, e.g. by a partition).
 */
class DeadlineProxy {
  /** Deadlines seen, in Unix ms (undefined: none sent). */
  readonly seen: (number | undefined)[] = [];
  shiftMs = 0;
  private server: Server | undefined;
  port = 0;

  constructor(private readonly upstream: KVStoreClient) {}

  async start(): Promise<void> {
    const upstream = this.upstream;
    const forward = (context: CallContext) => {
      const raw = context.metadata.get(deadlineMetadataKey);
      const deadline = raw === undefined ? undefined : Number(raw);
      this.seen.push(deadline);
      const metadata = Metadata();
      if (deadline !== undefined) metadata.set(deadlineMetadataKey, String(deadline + this.shiftMs));
      return { signal: context.signal, metadata };
    };
    const proxy = this;
    async function* shifted(requests: AsyncIterable<OperationStreamRequest>): AsyncGenerator<OperationStreamRequest> {
      for await (const request of requests) {
        for (const operation of request.operations) {
          proxy.seen.push(operation.deadlineUnixMs === 0n ? undefined : Number(operation.deadlineUnixMs));
          if (operation.deadlineUnixMs !== 0n) operation.deadlineUnixMs += BigInt(proxy.shiftMs);
        }
        yield request;
      }
    }
    // The node's status, passed on as it is (a ClientError thrown by a handler would become UNKNOWN).
    const passOn = <T>(call: Promise<T>): Promise<T> =>
      call.catch((error: unknown) => {
        throw error instanceof ClientError ? new ServerError(error.code, error.details) : error;
      });
    const implementation: KVStoreServiceImplementation = {
      put: (request, context) => passOn(upstream.put(request, forward(context))),
      get: (request, context) => passOn(upstream.get(request, forward(context))),
      delete: (request, context) => passOn(upstream.delete(request, forward(context))),
      batch: (request, context) => passOn(upstream.batch(request, forward(context))),
      backup: (request, { signal }) => upstream.backup(request, { signal }),
      status: (request, { signal }) => upstream.status(request, { signal }),
      verify: (request, { signal }) => upstream.verify(request, { signal }),
      repair: (request, { signal }) => upstream.repair(request, { signal }),
      changeMembership: (request, { signal }) => upstream.changeMembership(request, { signal }),
      async *listKeys(request, { signal }) {
        yield* upstream.listKeys(request, { signal });
      },
      async *operationStream(requests, { signal }) {
        yield* upstream.operationStream(shifted(requests), { signal });
      },
    };
    this.server = createServer();
    this.server.add(KVStoreDefinition, implementation);
    this.port = await this.server.listen('127.0.0.1:0');
  }

  async close(): Promise<void> {
    this.server?.forceShutdown();
  }
}

describe('late requests: the SDK sends its absolute deadline', () => {
  let single: SingleNode;
  let proxy: DeadlineProxy;
  const clients: KvClient[] = [];
  const viaProxy = (options: object): KvClient => {
    const client = new KvClient({ endpoints: [`127.0.0.1:${proxy.port}`], deadlineMs: 10_000, ...options });
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    single = await SingleNode.start('late-sdk');
    proxy = new DeadlineProxy(single.raw());
    await proxy.start();
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
    proxy.shiftMs = 0;
    proxy.seen.length = 0;
  });

  afterAll(async () => {
    await proxy?.close();
    await single?.close();
  });

  for (const { name, options } of transports) {
    it(`SDK put/get/delete work against the node directly (${name})`, async () => {
      const client = single.client(options);
      expect((await client.put('late/sdk-direct', 'v1')).found).toBe(false);
      expect(await client.getString('late/sdk-direct')).toBe('v1');
      expect(await client.delete('late/sdk-direct')).toBe(true);
      expect(await client.get('late/sdk-direct')).toBeUndefined();
    });

    it(`sends each put/get/delete's deadline, now + deadlineMs on the client's clock (${name})`, async () => {
      const client = viaProxy(options);
      const deadlineMs = 7_000;
      const before = Date.now();
      await client.put(`late/sdk-sent/${name}`, 'v', { deadlineMs });
      await client.get(`late/sdk-sent/${name}`, { deadlineMs });
      await client.delete(`late/sdk-sent/${name}`, { deadlineMs });
      const after = Date.now();
      expect(proxy.seen.length).toBe(3);
      for (const deadline of proxy.seen) {
        expect(deadline).toBeGreaterThanOrEqual(before + deadlineMs);
        expect(deadline).toBeLessThanOrEqual(after + deadlineMs + 1);
      }
    });

    it(`an SDK put held up past its deadline (the proxy moves its deadline 2 minutes back) fails with DEADLINE_EXCEEDED and is not applied (${name})`, async () => {
      const key = `late/sdk-held/${name}`;
      const client = viaProxy(options);
      await client.put(key, 'acknowledged');
      proxy.shiftMs = -twoMinutesMs;
      const error = await kvErrorOf(client.put(key, 'given-up'));
      expect(error).toBeInstanceOf(KvError);
      expectCode(error, Status.DEADLINE_EXCEEDED);
      expect(error.details).toMatch(refusalText);
      proxy.shiftMs = 0;
      expect(await client.getString(key)).toBe('acknowledged');
    });
  }
});
