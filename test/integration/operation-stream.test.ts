import { createChannel, createClient, createServer, Status, type Channel, type Server } from 'nice-grpc';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  Consistency,
  KVStoreDefinition,
  type BatchOperation,
  type KVStoreClient,
  type KVStoreServiceImplementation,
} from '../../gen/kvstore/v1/kvstore.js';
import { BatchCallTransport } from '../../src/client/coalescer.js';
import { KvClient, KvError } from '../../src/client/index.js';
import { StreamTransport } from '../../src/client/stream-transport.js';
import { TestCluster } from '../helpers/cluster.js';
import { bytes, deleteOp, expectDelete, expectError, expectGet, expectPut, getOp, kindsOf, putOp, show } from '../helpers/batch-results.js';
import { collectKeys, expectCode, kvErrorOf, SingleNode } from '../helpers/single-node.js';
import { op, RawStream } from '../helpers/raw-stream.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

/**
 * OperationStream (kvstore.proto): put/get/delete operations as messages on one long-lived
 * stream, each answered by id when it finishes. Raw nice-grpc clients against real nodes for the
 * protocol, and the SDK (which sends its coalesced calls there by default) for the client side.
 */

/** Small key limit (so a too-long key is cheap to make); the default 1 MiB value limit. */
const maxKeyBytes = 64;
const maxValueBytes = 1024 * 1024;
/** The node's limit on operations per stream message (kvstore.proto, src/server/operation-stream.ts). */
const messageOperationsMax = 1024;

describe('OperationStream: raw stream against one real node', () => {
  let single: SingleNode;
  let raw: KVStoreClient;
  let client: KvClient;
  const streams: RawStream[] = [];
  const open = (): RawStream => {
    const stream = new RawStream(raw);
    streams.push(stream);
    return stream;
  };

  beforeAll(async () => {
    single = await SingleNode.start('opstream1', { limits: { maxKeyBytes, maxValueBytes } });
    raw = single.raw();
    client = single.client({ operationStream: false });
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.cancel();
  });

  afterAll(async () => {
    for (const stream of streams.splice(0)) stream.cancel();
    await single?.close();
  });

  it('answers mixed put/get/delete operations of one message once each, by id, with its own kind and value', async () => {
    await raw.put({ key: bytes('mix/a'), value: bytes('a1'), consistency: Consistency.CONSISTENCY_UNSPECIFIED });
    await raw.put({ key: bytes('mix/b'), value: bytes('b1'), consistency: Consistency.CONSISTENCY_UNSPECIFIED });
    await raw.put({ key: bytes('mix/d'), value: bytes('d1'), consistency: Consistency.CONSISTENCY_UNSPECIFIED });

    const stream = open();
    // Ids are the client's choice: not in order, not from 0, the uint32 extremes included.
    const ids = { putA: 907, getB: 3, delD: 0xffff_ffff, getAbsent: 0, delNever: 55, putNewAll: 12, getAbsentOne: 400 };
    stream.send([
      op(ids.putA, putOp('mix/a', 'a2')),
      op(ids.getB, getOp('mix/b')),
      op(ids.delD, deleteOp('mix/d')),
      op(ids.getAbsent, getOp('mix/absent')),
      op(ids.delNever, deleteOp('mix/never-written')),
      op(ids.putNewAll, putOp('mix/new', 'n1', Consistency.CONSISTENCY_ALL), 5_000),
      op(ids.getAbsentOne, getOp('mix/absent-2', Consistency.CONSISTENCY_ONE), 1),
    ]);
    await stream.waitForAnswers(Object.values(ids));
    expectPut(stream.result(ids.putA), true, 'a1');
    expectGet(stream.result(ids.getB), true, 'b1');
    expectDelete(stream.result(ids.delD), true);
    expectGet(stream.result(ids.getAbsent), false);
    expectDelete(stream.result(ids.delNever), false);
    expectPut(stream.result(ids.putNewAll), false);
    expectGet(stream.result(ids.getAbsentOne), false);
    // Nothing else was answered: one answer per operation.
    expect(stream.answeredIds().sort((a, b) => a - b)).toEqual(Object.values(ids).sort((a, b) => a - b));

    // The same stream carries more messages; they see the writes of the first.
    stream.send([op(1, getOp('mix/a')), op(2, getOp('mix/d')), op(4, getOp('mix/new')), op(5, deleteOp('mix/d'))]);
    await stream.waitForAnswers([1, 2, 4, 5]);
    expectGet(stream.result(1), true, 'a2');
    expectGet(stream.result(2), false);
    expectGet(stream.result(4), true, 'n1');
    expectDelete(stream.result(5), false);
    // The unary RPCs see the same data.
    expect((await raw.get({ key: bytes('mix/a') })).value.toString()).toBe('a2');
    expect((await raw.get({ key: bytes('mix/d') })).found).toBe(false);
    expect((await raw.get({ key: bytes('mix/new') })).value.toString()).toBe('n1');
    expect(stream.hasEnded).toBe(false);
  });

  it('applies two writes to one key in one message in message order: the later one wins', async () => {
    const stream = open();
    stream.send([
      op(1, putOp('order/k', 'first')),
      op(2, putOp('order/k', 'second')),
      op(3, putOp('order/gone', 'here')),
      op(4, deleteOp('order/gone')),
      op(5, deleteOp('order/back')),
      op(6, putOp('order/back', 'again')),
    ]);
    await stream.waitForAnswers([1, 2, 3, 4, 5, 6]);
    expectPut(stream.result(1), false);
    // The second put replaced the first (written before it, with an older version).
    expectPut(stream.result(2), true, 'first');
    expectPut(stream.result(3), false);
    expectDelete(stream.result(4), true);
    expectDelete(stream.result(5), false);
    expectPut(stream.result(6), false);
    expect((await raw.get({ key: bytes('order/k') })).value.toString()).toBe('second');
    expect((await raw.get({ key: bytes('order/gone') })).found).toBe(false);
    expect((await raw.get({ key: bytes('order/back') })).value.toString()).toBe('again');

    // Many writes to one key in one message: each replaced the one before, the last stays.
    const many = Array.from({ length: 50 }, (_, i) => op(100 + i, putOp('order/many', `v${i}`)));
    stream.send(many);
    await stream.waitForAnswers(many.map((o) => o.id));
    expectPut(stream.result(100), false);
    for (let i = 1; i < 50; i++) expectPut(stream.result(100 + i), true, `v${i - 1}`);
    expect((await raw.get({ key: bytes('order/many') })).value.toString()).toBe('v49');
  });

  it('answers each operation of a repeated id once, with that id', async () => {
    const stream = open();
    stream.send([op(7, putOp('dup/a', 'x')), op(7, putOp('dup/b', 'y')), op(7, getOp('dup/absent'))]);
    await waitFor('three answers to id 7', () => stream.answersTo(7).length >= 3 || stream.hasEnded);
    const answers = stream.answersTo(7);
    expect(answers, show(answers)).toHaveLength(3);
    expect(answers.map((a) => kindsOf(a.result).join()).sort()).toEqual(['get', 'put', 'put']);
    expect((await raw.get({ key: bytes('dup/a') })).value.toString()).toBe('x');
    expect((await raw.get({ key: bytes('dup/b') })).value.toString()).toBe('y');
  });

  it('answers an invalid operation (key over maxKeyBytes, operation unset) with its own INVALID_ARGUMENT; the others succeed', async () => {
    await raw.put({ key: bytes('err/existing'), value: bytes('kept'), consistency: Consistency.CONSISTENCY_UNSPECIFIED });
    const longKey = 'k'.repeat(maxKeyBytes + 1);
    const stream = open();
    stream.send([
      op(10, putOp('err/ok1', 'one')),
      op(11, getOp(longKey)),
      op(12, undefined), // no operation set
      op(13, getOp('err/existing')),
      op(14, putOp(`err/${longKey}`, 'too long')),
      op(15, {}), // an empty BatchOperation: none of put/get/delete
      op(16, deleteOp(longKey)),
      op(17, putOp(Buffer.alloc(0), 'empty key')),
      op(18, putOp('err/ok2', 'two')),
      op(19, deleteOp('err/absent')),
    ]);
    const ids = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
    await stream.waitForAnswers(ids);
    expectPut(stream.result(10), false);
    expectError(stream.result(11), Status.INVALID_ARGUMENT, 'limits.maxKeyBytes', String(maxKeyBytes));
    expectError(stream.result(12), Status.INVALID_ARGUMENT, 'put', 'get', 'delete');
    expectGet(stream.result(13), true, 'kept');
    expectError(stream.result(14), Status.INVALID_ARGUMENT, 'limits.maxKeyBytes');
    expectError(stream.result(15), Status.INVALID_ARGUMENT, 'put', 'get', 'delete');
    expectError(stream.result(16), Status.INVALID_ARGUMENT, 'limits.maxKeyBytes');
    expectError(stream.result(17), Status.INVALID_ARGUMENT, 'empty');
    expectPut(stream.result(18), false);
    expectDelete(stream.result(19), false);
    expect(stream.answeredIds().sort((a, b) => a - b)).toEqual(ids);

    // The valid writes happened; the refused ones wrote nothing. The stream is still open.
    const keys = (await collectKeys(client.listKeys({ prefix: 'err/' }))).map(String);
    expect(keys).toEqual(['err/existing', 'err/ok1', 'err/ok2']);
    stream.send([op(20, getOp('err/ok2'))]);
    await stream.waitForAnswers([20]);
    expectGet(stream.result(20), true, 'two');
    expect(stream.hasEnded).toBe(false);
  });

  it(`ends the stream with RESOURCE_EXHAUSTED on a message of ${messageOperationsMax + 1} operations, after answering the earlier message; none of them is applied`, async () => {
    const stream = open();
    // All three messages are sent at once: the node reads the first, runs it, then meets the second.
    const earlier = [op(1, putOp('over/earlier/1', 'e1')), op(2, putOp('over/earlier/2', 'e2')), op(3, getOp('over/earlier/1'))];
    stream.send(earlier);
    const tooMany = Array.from({ length: messageOperationsMax + 1 }, (_, i) => op(1000 + i, putOp(`over/big/${i}`, `v${i}`)));
    stream.send(tooMany);
    stream.send([op(5000, putOp('over/after', 'never read'))]);

    const end = await stream.ended;
    expectCode(end, Status.RESOURCE_EXHAUSTED);
    expect(end.details).toContain(String(messageOperationsMax));
    // The earlier message was answered in full before the error; nothing after it was.
    expect(stream.answeredIds().sort((a, b) => a - b)).toEqual([1, 2, 3]);
    expectPut(stream.result(1), false);
    expectPut(stream.result(2), false);
    // The get ran concurrently with the put of its message: it may or may not see it.
    expect(kindsOf(stream.result(3))).toEqual(['get']);

    expect((await raw.get({ key: bytes('over/earlier/1') })).value.toString()).toBe('e1');
    expect((await raw.get({ key: bytes('over/earlier/2') })).value.toString()).toBe('e2');
    expect((await raw.get({ key: bytes('over/big/0') })).found).toBe(false);
    expect((await raw.get({ key: bytes(`over/big/${messageOperationsMax}`) })).found).toBe(false);
    expect(await collectKeys(client.listKeys({ prefix: 'over/big/' }))).toEqual([]);
    expect((await raw.get({ key: bytes('over/after') })).found).toBe(false);

    // Exactly at the limit is accepted, on a new stream.
    const next = open();
    next.send(tooMany.slice(0, messageOperationsMax));
    await next.waitForAnswers(tooMany.slice(0, messageOperationsMax).map((o) => o.id));
    for (const o of tooMany.slice(0, messageOperationsMax)) expectPut(next.result(o.id), false);
    expect((await collectKeys(client.listKeys({ prefix: 'over/big/' }))).length).toBe(messageOperationsMax);
    expect(next.hasEnded).toBe(false);
  });

  it('on half-close answers every operation sent, then ends the stream with OK', async () => {
    const stream = open();
    const perMessage = 100;
    const keyOf = (i: number): string => `half/${String(i).padStart(3, '0')}`;
    // Puts, an empty message (allowed, answers nothing), a second round of puts on the same keys,
    // then deletes of half of them: four messages, sent back to back, then the half-close.
    stream.send(Array.from({ length: perMessage }, (_, i) => op(i, putOp(keyOf(i), `first-${i}`))));
    stream.send([]);
    stream.send(Array.from({ length: perMessage }, (_, i) => op(1000 + i, putOp(keyOf(i), `second-${i}`))));
    stream.send(Array.from({ length: perMessage / 2 }, (_, i) => op(2000 + i, deleteOp(keyOf(2 * i)))));
    stream.end();

    const end = await stream.ended;
    expect(end, show(end)).toEqual({ code: Status.OK, details: '' });
    const expectedIds = [
      ...Array.from({ length: perMessage }, (_, i) => i),
      ...Array.from({ length: perMessage }, (_, i) => 1000 + i),
      ...Array.from({ length: perMessage / 2 }, (_, i) => 2000 + i),
    ];
    expect(stream.answeredIds().sort((a, b) => a - b)).toEqual(expectedIds);
    for (let i = 0; i < perMessage; i++) {
      expectPut(stream.result(i), false);
      // Written in a later message, after the first one's write was answered? Not necessarily:
      // messages run concurrently. Either way it is a put answer, and the data below is final.
      expect(kindsOf(stream.result(1000 + i))).toEqual(['put']);
    }
    for (let i = 0; i < perMessage / 2; i++) expect(kindsOf(stream.result(2000 + i))).toEqual(['delete']);
    const listed = (await collectKeys(client.listKeys({ prefix: 'half/' }))).map(String);
    expect(listed).toEqual(Array.from({ length: perMessage }, (_, i) => i).filter((i) => i % 2 === 1).map(keyOf));
    expect(await client.getString(keyOf(1))).toBe('second-1');
  });

  it('answers an empty stream half-closed at once with OK and no message', async () => {
    const stream = open();
    stream.end();
    expect(await stream.ended).toEqual({ code: Status.OK, details: '' });
    expect(stream.messages).toEqual([]);
  });
});

describe('OperationStream: node stop with open streams', () => {
  let single: SingleNode;
  const streams: RawStream[] = [];

  beforeAll(async () => {
    single = await SingleNode.start('opstream-stop', { limits: { maxKeyBytes, maxValueBytes } });
  });

  afterAll(async () => {
    for (const stream of streams) stream.cancel();
    await single?.close();
  });

  it('stops without waiting for the grace timer: read operations are answered, the streams end with OK, acknowledged writes survive', async () => {
    const sdk = single.client({ deadlineMs: 30_000 });
    const openSpy = vi.spyOn(StreamTransport.prototype as unknown as { open(): unknown }, 'open');
    try {
      // The SDK's stream is open (one call answered on it).
      expect(await sdk.put('stop/sdk-first', 'v')).toEqual({ found: false });
      expect(openSpy).toHaveBeenCalledTimes(1);
    } finally {
      openSpy.mockRestore();
    }
    const stream = new RawStream(single.raw());
    streams.push(stream);
    const before = Array.from({ length: 50 }, (_, i) => op(i, putOp(`stop/before/${i}`, `b${i}`)));
    stream.send(before);
    await stream.waitForAnswers(before.map((o) => o.id));
    for (const o of before) expectPut(stream.result(o.id), false);

    // Operations in flight as SIGTERM arrives: a raw message and SDK puts, sent right before it.
    const racing = Array.from({ length: 200 }, (_, i) => op(1000 + i, putOp(`stop/racing/${i}`, `r${i}`)));
    stream.send(racing);
    const sdkPuts = Array.from({ length: 50 }, (_, i) =>
      sdk.put(`stop/sdk/${i}`, `s${i}`).then(
        () => ({ key: `stop/sdk/${i}`, ok: true as const }),
        (error: unknown) => ({ key: `stop/sdk/${i}`, ok: false as const, error }),
      ),
    );
    const logFrom = single.node.stdoutLines.length;
    const exitCode = await single.node.stop();
    const log = single.node.stdoutLines.slice(logFrom);
    expect(exitCode, single.node.output()).toBe(0);
    expect(log.some((line) => line.includes('stopped cleanly')), single.node.output()).toBe(true);
    // The open streams did not hold the shutdown until the grace timer cut them off.
    expect(log.filter((line) => line.includes('did not finish in time')), single.node.output()).toEqual([]);

    // The raw stream ended normally; the racing message was read and answered in full, or not
    // read at all (a message is read whole).
    const end = await stream.ended;
    expect(end, show(end)).toEqual({ code: Status.OK, details: '' });
    const racingAnswered = racing.filter((o) => stream.answersTo(o.id).length > 0);
    expect([0, racing.length], `racing operations answered: ${racingAnswered.length}`).toContain(racingAnswered.length);
    for (const o of racingAnswered) expectPut(stream.result(o.id), false);
    for (const o of before) expect(stream.answersTo(o.id)).toHaveLength(1);

    // Every SDK put settled: acknowledged, or failed with a KvError (the node ended its stream).
    const outcomes = await Promise.all(sdkPuts);
    for (const outcome of outcomes) {
      if (!outcome.ok) {
        expect(KvError.isKvError(outcome.error), String(outcome.error)).toBe(true);
        expectCode(outcome.error as KvError, Status.UNAVAILABLE, Status.CANCELLED);
      }
    }

    // After a restart, every acknowledged write is there, and no unanswered racing one.
    await single.node.start();
    const check = single.raw();
    for (const o of before) expect((await check.get({ key: o.operation!.put!.key })).found).toBe(true);
    for (const o of racing) {
      const found = (await check.get({ key: o.operation!.put!.key })).found;
      expect(found, `stop/racing/${o.id - 1000}`).toBe(racingAnswered.length > 0);
    }
    for (const outcome of outcomes) {
      if (outcome.ok) expect((await check.get({ key: bytes(outcome.key) })).found, outcome.key).toBe(true);
    }
  });
});

/**
 * Three node processes (replicationFactor 3), talking to n1. A put at ALL needs every replica, so
 * with n3 frozen (SIGSTOP: its connections stay open, nothing answers) it can only time out, and
 * with n3 stopped and known to be down it fails at once with UNAVAILABLE; a get at ONE is answered
 * by n1 alone. peerCallMs is long, so n1's calls to a frozen n3 do not time out; n1 notices it
 * only when the peer connection's keepalive gives up (10 s + 5 s, src/replication/peer-link.ts),
 * and would then fail the put with UNAVAILABLE instead: the tests freeze n3 for less than that.
 */
describe('OperationStream: out-of-order answers and per-operation timeouts (3-node cluster)', () => {
  let cluster: TestCluster;
  let channel: Channel;
  let raw: KVStoreClient;
  const streams: RawStream[] = [];
  const open = (): RawStream => {
    const stream = new RawStream(raw);
    streams.push(stream);
    return stream;
  };
  const n3Frozen = async <T>(fn: () => Promise<T>): Promise<T> => {
    cluster.node('n3').pause();
    try {
      return await fn();
    } finally {
      cluster.node('n3').resume();
    }
  };

  beforeAll(async () => {
    cluster = await TestCluster.start({
      size: 3,
      replicationFactor: 3,
      config: {
        timeouts: { requestMs: 60_000, peerCallMs: 60_000 },
        antiEntropy: { intervalSeconds: 0, maxRecordsPerSecond: 20_000 },
      },
    });
    const n1 = cluster.client('n1');
    await n1.put('ooo/seed', 'seeded', { consistency: 'all' });
    channel = createChannel(cluster.node('n1').listen);
    raw = createClient(KVStoreDefinition, channel);
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.cancel();
  });

  afterAll(async () => {
    for (const stream of streams.splice(0)) stream.cancel();
    channel?.close();
    cluster?.node('n3').resume();
    await cluster?.stop();
  });

  /** The get's answer came in an earlier response message than the put's, or earlier in the same one. */
  const expectAnsweredFirst = (stream: RawStream, first: number, then: number): void => {
    const a = stream.answer(first);
    const b = stream.answer(then);
    const where = `get in message ${a.message} at ${a.position}, put in message ${b.message} at ${b.position}`;
    expect(a.message, where).toBeLessThanOrEqual(b.message);
    if (a.message === b.message) expect(a.position, where).toBeLessThan(b.position);
  };

  it('answers a get at ONE before an earlier put at ALL of the same message, which times out with DEADLINE_EXCEEDED', async () => {
    const stream = open();
    await n3Frozen(async () => {
      // The put comes first in the message; both carry the same short timeout.
      stream.send([op(1, putOp('ooo/all-1', 'v', Consistency.CONSISTENCY_ALL), 300), op(2, getOp('ooo/seed', Consistency.CONSISTENCY_ONE), 300)]);
      await stream.waitForAnswers([1, 2]);
    });
    expectGet(stream.result(2), true, 'seeded');
    expectError(stream.result(1), Status.DEADLINE_EXCEEDED, 'ALL');
    expectAnsweredFirst(stream, 2, 1);
    expect(stream.hasEnded).toBe(false);
  });

  it('answers a later message (get at ONE) while an earlier one (put at ALL) still waits for replicas', async () => {
    const stream = open();
    await n3Frozen(async () => {
      stream.send([op(1, putOp('ooo/all-2', 'v', Consistency.CONSISTENCY_ALL), 2_000)]);
      stream.send([op(2, getOp('ooo/seed', Consistency.CONSISTENCY_ONE), 2_000)]);
      await stream.waitForAnswers([2]);
      // The get is answered while the put still waits for n3: strictly earlier.
      expect(stream.answersTo(1), show(stream.answersTo(1))).toEqual([]);
      await stream.waitForAnswers([1]);
    });
    expectGet(stream.result(2), true, 'seeded');
    expectError(stream.result(1), Status.DEADLINE_EXCEEDED);
    expect(stream.answer(2).message).toBeLessThan(stream.answer(1).message);
  });

  it("times an operation out by its own timeoutMs, not by another operation's in the same message", async () => {
    // kvstore.proto: each operation is independent, "with its own timeout"; timeout_ms is "how
    // long the node may wait for replicas on it". The put asks for 300 ms; the get asks for the
    // node's cap (0 = timeouts.requestMs, 60 s here). The put must be answered DEADLINE_EXCEEDED
    // long before 60 s; the wait below is bounded at 15 s.
    // Regression: with one RequestDeadline per message, set to the longest timeout of its
    // operations, the put waited until n1 dropped its connection to the frozen n3 (keepalive,
    // 10-15 s) and was answered UNAVAILABLE, or until the 60 s cap.
    const stream = open();
    await n3Frozen(async () => {
      stream.send([op(1, putOp('ooo/all-3', 'v', Consistency.CONSISTENCY_ALL), 300), op(2, getOp('ooo/seed', Consistency.CONSISTENCY_ONE), 0)]);
      await stream.waitForAnswers([2]);
      await stream.waitForAnswers([1], 15_000);
    });
    expectGet(stream.result(2), true, 'seeded');
    expectError(stream.result(1), Status.DEADLINE_EXCEEDED);
  });

  it('answers a put at ALL with UNAVAILABLE once a replica is down, after the get at ONE of the same message', async () => {
    const n1 = cluster.client('n1');
    await cluster.node('n3').stop();
    await waitFor('n1 to see n3 unreachable', async () => (await n1.status()).members.some((m) => m.nodeId === 'n3' && !m.reachable));
    const stream = open();
    stream.send([op(1, putOp('ooo/all-4', 'v', Consistency.CONSISTENCY_ALL), 300), op(2, getOp('ooo/seed', Consistency.CONSISTENCY_ONE), 300)]);
    await stream.waitForAnswers([1, 2]);
    expectGet(stream.result(2), true, 'seeded');
    expectError(stream.result(1), Status.UNAVAILABLE, 'n3');
    expectAnsweredFirst(stream, 2, 1);
  });
});

/**
 * An older node at the gRPC level: the KVStore service without the methods in `missing` (gRPC
 * answers UNIMPLEMENTED for them), forwarding every other call to `node`. The put/get/delete/
 * batch/listKeys calls it forwards are recorded in `served`.
 */
async function olderNode(node: SingleNode, missing: readonly ('operationStream' | 'batch')[], served: string[]): Promise<{ server: Server; port: number }> {
  const methods = Object.fromEntries(Object.entries(KVStoreDefinition.methods).filter(([name]) => !(missing as readonly string[]).includes(name)));
  const definition = { ...KVStoreDefinition, methods } as unknown as typeof KVStoreDefinition;
  const upstream = node.raw();
  const server: Server = createServer();
  // Only the methods of `definition` are served; the others here are never called.
  const implementation: KVStoreServiceImplementation = {
    put: (request, { signal }) => (served.push('put'), upstream.put(request, { signal })),
    get: (request, { signal }) => (served.push('get'), upstream.get(request, { signal })),
    delete: (request, { signal }) => (served.push('delete'), upstream.delete(request, { signal })),
    batch: (request, { signal }) => (served.push('batch'), upstream.batch(request, { signal })),
    backup: (request, { signal }) => upstream.backup(request, { signal }),
    status: (request, { signal }) => upstream.status(request, { signal }),
    verify: (request, { signal }) => upstream.verify(request, { signal }),
    repair: (request, { signal }) => upstream.repair(request, { signal }),
    changeMembership: (request, { signal }) => upstream.changeMembership(request, { signal }),
    async *listKeys(request, { signal }) {
      served.push('listKeys');
      yield* upstream.listKeys(request, { signal });
    },
    // eslint-disable-next-line require-yield
    async *operationStream() {
      throw new Error('not served');
    },
  };
  server.add(definition, implementation);
  return { server, port: await server.listen('127.0.0.1:0') };
}

describe('SDK over OperationStream', () => {
  let single: SingleNode;

  beforeAll(async () => {
    single = await SingleNode.start('opstream-sdk', { limits: { maxKeyBytes, maxValueBytes } });
  });

  afterEach(() => {
    vi.restoreAllMocks();
    single?.node.resume(); // in case a test failed while the node was frozen
  });

  afterAll(async () => {
    await single?.close();
  });

  it('by default sends 200 concurrent callers\' put/get/delete over one OperationStream, each getting its own result', async () => {
    const streamSend = vi.spyOn(StreamTransport.prototype, 'send');
    const batchSend = vi.spyOn(BatchCallTransport.prototype, 'send');
    const client = single.client();
    const n = 200;
    const keys = Array.from({ length: n }, (_, i) => `sdk/${String(i).padStart(3, '0')}`);
    const created = await Promise.all(keys.map((key, i) => client.put(key, `first-${i}`)));
    expect(created.every((r) => !r.found), show(created.filter((r) => r.found))).toBe(true);
    const replaced = await Promise.all(keys.map((key, i) => client.put(key, `second-${i}`)));
    replaced.forEach((r, i) => {
      expect(r.found, keys[i]).toBe(true);
      expect(r.oldValue?.toString(), keys[i]).toBe(`first-${i}`);
    });
    expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys.map((_, i) => `second-${i}`));
    const absent = await Promise.all(keys.map((key) => client.get(`${key}/absent`)));
    expect(absent.every((v) => v === undefined)).toBe(true);
    const deleted = await Promise.all(keys.map((key, i) => (i % 2 === 0 ? client.delete(key) : client.delete(`${key}/absent`))));
    expect(deleted).toEqual(keys.map((_, i) => i % 2 === 0));
    // Mixed kinds in one burst, each its own answer.
    const mixed = await Promise.all(
      keys.map((key, i) => (i % 3 === 0 ? client.getString(key) : i % 3 === 1 ? client.put(key, `third-${i}`).then((r) => r.found) : client.delete(key))),
    );
    mixed.forEach((value, i) => {
      if (i % 3 === 0) expect(value, keys[i]).toBe(i % 2 === 0 ? undefined : `second-${i}`);
      else expect(value, keys[i]).toBe(i % 2 === 1);
    });

    // Every call went as stream messages, several per message; no Batch call was made.
    const sent = streamSend.mock.calls.map(([batch]) => batch.length);
    expect(sent.reduce((a, b) => a + b, 0)).toBe(6 * n);
    expect(Math.max(...sent), `message sizes ${sent.join(',')}`).toBeGreaterThan(1);
    expect(batchSend).not.toHaveBeenCalled();
  });

  it('with operationStream: false sends coalesced calls as Batch calls, not on a stream', async () => {
    const streamSend = vi.spyOn(StreamTransport.prototype, 'send');
    const batchSend = vi.spyOn(BatchCallTransport.prototype, 'send');
    const client = single.client({ operationStream: false });
    const keys = Array.from({ length: 50 }, (_, i) => `nostream/${i}`);
    await Promise.all(keys.map((key) => client.put(key, key)));
    expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys);
    expect(streamSend).not.toHaveBeenCalled();
    expect(batchSend.mock.calls.reduce((sum, [batch]) => sum + batch.length, 0)).toBe(100);
  });

  it('refuses an operationStream option that is not a boolean', () => {
    const endpoints = [single.node.listen];
    for (const bad of ['yes', 1, null, {}]) {
      expect(() => new KvClient({ endpoints, operationStream: bad as never }), JSON.stringify(bad)).toThrow(/operationStream/);
    }
    for (const good of [true, false, undefined]) new KvClient({ endpoints, operationStream: good }).close();
  });

  it('fails a get over a silent connection with DEADLINE_EXCEEDED; once the node answers again, calls succeed', async () => {
    // SIGSTOP freezes the node: its TCP connection stays open and nothing is answered, as on a
    // black-holed connection (the TCP proxy helper can only reset existing connections; see the
    // proxy test below for that).
    const client = single.client({ deadlineMs: 20_000 });
    await client.put('silent/k', 'v1');
    single.node.pause();
    let longGet: Promise<string | undefined> | undefined;
    let longPut: Promise<{ ok: true; result: unknown } | { ok: false; error: unknown }> | undefined;
    try {
      // Sent before the short get, on the same stream: a read and a write with long deadlines.
      longGet = client.getString('silent/k');
      longPut = client.put('silent/put', 'maybe').then(
        (result) => ({ ok: true as const, result }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      longGet.catch(() => undefined); // awaited below; no unhandled rejection if the test fails first
      await new Promise((resolve) => setImmediate(resolve));
      const error = await kvErrorOf(client.get('silent/k', { deadlineMs: 300 }));
      expectCode(error, Status.DEADLINE_EXCEEDED);
      expect(error.operation).toBe('get');
      expect(error.unreachable).toBe(false);
    } finally {
      single.node.resume();
    }
    // The read is answered (on its stream, or retried on a new one if that stream was given up).
    expect(await longGet).toBe('v1');
    // The write is answered, or failed with UNAVAILABLE with its stream (sent, so never resent).
    const put = await longPut!;
    if (!put.ok) {
      expect(KvError.isKvError(put.error), String(put.error)).toBe(true);
      expectCode(put.error as KvError, Status.UNAVAILABLE);
    } else {
      expect(put.result).toEqual({ found: false });
    }
    expect(await client.getString('silent/k', { deadlineMs: 5_000 })).toBe('v1');
    expect(await client.put('silent/k', 'v2')).toEqual({ found: true, oldValue: Buffer.from('v1') });
  });

  it('gives up a silent stream when a deadline passes with no answer since the call was sent, even right after an answer', async () => {
    // Regression: "an answer since the operation was sent" was judged on Date.now() in whole
    // milliseconds, so an answer read in the same millisecond as, but before, the send counted as
    // one (now counted in response messages). A connection that goes silent
    // right after an answer (here: the node is frozen at once) is then kept: the calls on it wait
    // their whole deadlines and new calls are sent to it too. Each round: a get is answered, the
    // node is frozen, a put and a short get go out together; when the short get's deadline passes
    // the stream must be given up, failing the put with UNAVAILABLE in that same turn. Whether a
    // round hits the same millisecond is chance (about 2 rounds in 3 on our VM), hence 8 rounds.
    const rounds = 8;
    const client = single.client({ deadlineMs: 20_000 });
    await client.put('silent2/k', 'v1');
    const kept: number[] = [];
    for (let round = 0; round < rounds; round++) {
      expect(await client.getString('silent2/k')).toBe('v1');
      single.node.pause();
      let put: Promise<unknown> | undefined;
      let putOutcome: unknown;
      try {
        put = client.put(`silent2/put-${round}`, 'maybe').then(
          () => (putOutcome = 'acknowledged'),
          (error: unknown) => (putOutcome = error),
        );
        const error = await kvErrorOf(client.get('silent2/k', { deadlineMs: 200 }));
        expectCode(error, Status.DEADLINE_EXCEEDED);
        await new Promise((resolve) => setImmediate(resolve));
        if (putOutcome === undefined) kept.push(round);
        else {
          expect(KvError.isKvError(putOutcome), String(putOutcome)).toBe(true);
          expectCode(putOutcome as KvError, Status.UNAVAILABLE);
        }
      } finally {
        single.node.resume();
      }
      await put;
    }
    expect(kept, `rounds (of ${rounds}) in which the silent stream was kept after a deadline passed with no answer since the send`).toEqual([]);
  });

  it('fails a get with a short deadline through a black-holed proxy, then works on a new stream once it heals', async () => {
    const proxy = await new TcpProxy(single.node.listen).start();
    const openSpy = vi.spyOn(StreamTransport.prototype as unknown as { open(): unknown }, 'open');
    const client = new KvClient({ endpoints: [proxy.address], deadlineMs: 10_000, connectTimeoutMs: 5_000 });
    try {
      expect(await client.put('proxy/k', 'v1')).toEqual({ found: false });
      const opened = openSpy.mock.calls.length;
      expect(opened).toBe(1);
      proxy.blackhole();
      const error = await kvErrorOf(client.get('proxy/k', { deadlineMs: 300 }));
      expectCode(error, Status.DEADLINE_EXCEEDED, Status.UNAVAILABLE);
      proxy.heal();
      const value = await waitFor('a get through the healed proxy', () => client.getString('proxy/k', { deadlineMs: 2_000 }).catch(() => undefined), 20_000);
      expect(value).toBe('v1');
      expect(openSpy.mock.calls.length).toBeGreaterThan(opened);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it('rejects calls in flight on the stream when the client is closed, with CANCELLED, and later calls with FAILED_PRECONDITION', async () => {
    const streamSend = vi.spyOn(StreamTransport.prototype, 'send');
    const client = single.client({ deadlineMs: 60_000 });
    await client.put('close/k', 'v');
    single.node.pause();
    try {
      const sentBefore = streamSend.mock.calls.length;
      const sent = [client.getString('close/k'), client.put('close/p', 'x'), client.delete('close/d')];
      await waitFor('the calls to be sent on the stream', () => streamSend.mock.calls.length > sentBefore, 5_000);
      client.close();
      // They settle at once (their 60 s deadline is far beyond the test's timeout).
      const errors = await Promise.all(sent.map((call) => kvErrorOf(call)));
      for (const error of errors) expectCode(error, Status.CANCELLED);
      expect(errors.map((e) => e.operation)).toEqual(['get', 'put', 'delete']);
      expect(errors[0]!.details).toContain('closed');
    } finally {
      single.node.resume();
    }
    const later = await kvErrorOf(client.get('close/k'));
    expectCode(later, Status.FAILED_PRECONDITION);
    await expect(client.put('close/k', 'x')).rejects.toThrow(/closed/);
    expect(() => client.close()).not.toThrow();
    // The put sent before close() was not cancelled on the node: it may or may not be applied,
    // but the node still serves.
    expect(await single.client().getString('close/k')).toBe('v');
  });

  it('rejects a call made in the same turn as close() with CANCELLED or FAILED_PRECONDITION, and opens no stream after close()', async () => {
    // Regression: the call passed checkOpen() and was waiting for its connection check (an await)
    // when close() ran; it then went to the closed coalescer, whose closed StreamTransport opened
    // a new OperationStream on the closed channel, and the call failed with UNKNOWN "Channel has
    // been shut down" (an Error, not a ClientError) instead of a "client closed" code.
    const openSpy = vi.spyOn(StreamTransport.prototype as unknown as { open(): unknown }, 'open');
    const client = single.client({ deadlineMs: 10_000 });
    await client.put('close2/k', 'v');
    const openedBeforeClose = openSpy.mock.calls.length;
    const racing = [client.get('close2/k'), client.put('close2/k', 'w'), client.delete('close2/k')];
    client.close();
    const errors = await Promise.all(racing.map((call) => kvErrorOf(call)));
    expect(errors.map((e) => e.operation)).toEqual(['get', 'put', 'delete']);
    expect
      .soft(errors.map((e) => `${e.operation}: ${Status[e.code]}`), errors.map((e) => e.message).join('\n'))
      .toEqual(errors.map((e) => `${e.operation}: ${e.code === Status.FAILED_PRECONDITION ? 'FAILED_PRECONDITION' : 'CANCELLED'}`));
    expect.soft(openSpy.mock.calls.length - openedBeforeClose, 'OperationStreams opened after close()').toBe(0);
  });

  it('falls back to Batch calls for good when the node does not serve OperationStream (UNIMPLEMENTED)', async () => {
    // An "older node" at the gRPC level: the KVStore service without OperationStream, forwarding
    // every other call to the real node.
    const served: string[] = [];
    const { server: legacy, port } = await olderNode(single, ['operationStream'], served);
    const openSpy = vi.spyOn(StreamTransport.prototype as unknown as { open(): unknown }, 'open');
    const batchSend = vi.spyOn(BatchCallTransport.prototype, 'send');
    const client = new KvClient({ endpoints: [`127.0.0.1:${port}`], deadlineMs: 10_000 });
    try {
      // The first burst goes on a stream, is refused with UNIMPLEMENTED, and is resent as Batch calls.
      const keys = Array.from({ length: 20 }, (_, i) => `legacy/${i}`);
      const created = await Promise.all(keys.map((key, i) => client.put(key, `v${i}`)));
      expect(created.every((r) => !r.found)).toBe(true);
      expect(openSpy).toHaveBeenCalledTimes(1);
      expect(batchSend).toHaveBeenCalled();
      const batchesAfterFirst = batchSend.mock.calls.length;

      // Later calls go straight to Batch: no other stream is tried.
      expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys.map((_, i) => `v${i}`));
      expect((await client.put(keys[0]!, 'replaced')).oldValue?.toString()).toBe('v0');
      expect(await client.delete(keys[1]!)).toBe(true);
      expect(await client.delete(keys[1]!)).toBe(false);
      expect(await client.get(keys[1]!)).toBeUndefined();
      const error = await kvErrorOf(client.get('k'.repeat(maxKeyBytes + 1)));
      expectCode(error, Status.INVALID_ARGUMENT);
      expect(openSpy).toHaveBeenCalledTimes(1);
      expect(batchSend.mock.calls.length).toBeGreaterThan(batchesAfterFirst);
      // Every operation reached the node as Batch calls.
      expect(served.filter((s) => s !== 'batch')).toEqual([]);
      const direct = single.raw();
      expect((await direct.get({ key: bytes(keys[0]!) })).value.toString()).toBe('replaced');
      expect((await direct.get({ key: bytes(keys[1]!) })).found).toBe(false);
      expect((await direct.get({ key: bytes(keys[19]!) })).value.toString()).toBe('v19');
    } finally {
      client.close();
      await legacy.shutdown();
    }
  });

  it('falls back to unary calls for good when the node serves neither OperationStream nor Batch', async () => {
    // A node older than Batch, at the gRPC level: only the single-operation RPCs, forwarded.
    const served: string[] = [];
    const { server: oldest, port } = await olderNode(single, ['operationStream', 'batch'], served);
    const client = new KvClient({ endpoints: [`127.0.0.1:${port}`], deadlineMs: 10_000 });
    try {
      // The first burst is refused twice with UNIMPLEMENTED (stream, then Batch) before anything
      // ran, and is resent call by call; each caller still gets its own answer.
      const keys = Array.from({ length: 10 }, (_, i) => `oldest/${i}`);
      const created = await Promise.all(keys.map((key, i) => client.put(key, `v${i}`)));
      expect(created.every((r) => !r.found)).toBe(true);
      expect(served.filter((s) => s === 'put')).toHaveLength(keys.length);
      expect(await Promise.all(keys.map((key) => client.getString(key)))).toEqual(keys.map((_, i) => `v${i}`));
      expect((await client.put(keys[0]!, 'replaced')).oldValue?.toString()).toBe('v0');
      expect(await client.delete(keys[1]!)).toBe(true);
      expect(await client.get(keys[1]!)).toBeUndefined();
      // Each put ran once: the refused attempts did not apply anything.
      expect(served.filter((s) => s === 'put')).toHaveLength(keys.length + 1);
      const direct = single.raw();
      expect((await direct.get({ key: bytes(keys[0]!) })).value.toString()).toBe('replaced');
      expect((await direct.get({ key: bytes(keys[9]!) })).value.toString()).toBe('v9');
    } finally {
      client.close();
      await oldest.shutdown();
    }
  });
});
