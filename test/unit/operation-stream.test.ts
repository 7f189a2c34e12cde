import { describe, expect, it } from 'vitest';
import type { BatchOperation, BatchResult, OperationStreamRequest, OperationStreamResponse } from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../../src/common/push-queue.js';
import { InFlightBudget, operationBytes } from '../../src/server/in-flight-budget.js';
import { OperationStreamStats, serveOperationStream, streamAnswerMessageBytesMax, streamBytesInFlightMax, streamOperationsInFlightMax, streamOperationsRunningMax } from '../../src/server/operation-stream.js';

/**
 * serveOperationStream's flow control and ending rules, with operations the test finishes by hand
 * (the real operations are covered end to end in test/integration/operation-stream.test.ts).
 */

const tick = () => new Promise((resolve) => setImmediate(resolve));
const unlimited = () => new InFlightBudget(Number.MAX_SAFE_INTEGER);

/** Operations that finish when the test says so; counts what was started. */
function heldOperations() {
  const waiting: { key: string; finish: (result: BatchResult) => void }[] = [];
  return {
    started: () => waiting.length,
    run(operation: BatchOperation): Promise<BatchResult> {
      return new Promise((finish) => waiting.push({ key: operation.get!.key.toString(), finish }));
    },
    /** Finishes the first `count` unfinished operations (oldest first). */
    finish(count: number) {
      for (const op of waiting.splice(0, count)) op.finish({ get: { found: true, value: Buffer.from(op.key) } });
    },
  };
}

/** A message of `count` gets with ids from `firstId` on. */
function message(firstId: number, count: number): OperationStreamRequest {
  return {
    operations: Array.from({ length: count }, (_, i) => ({ id: firstId + i, timeoutMs: 0, operation: { get: { key: Buffer.from(`k${firstId + i}`), consistency: 0 } }, deadlineUnixMs: 0n })),
  };
}

/** Reads every response message of `answers` into `into` until it ends; resolves with its error, if any. */
async function drain(answers: AsyncGenerator<OperationStreamResponse>, into: Map<number, BatchResult>): Promise<unknown> {
  try {
    for await (const response of answers) {
      for (const { id, result } of response.results) {
        expect(into.has(id), `id ${id} answered twice`).toBe(false);
        into.set(id, result!);
      }
    }
    return undefined;
  } catch (error) {
    return error;
  }
}

/** The ids a response message answers. */
function idsOf(next: IteratorResult<OperationStreamResponse, void>): number[] {
  return next.done === true ? [] : next.value.results.map((r) => r.id);
}

describe('serveOperationStream', () => {
  it(`stops reading at ${streamOperationsInFlightMax} operations in flight, runs at most ${streamOperationsRunningMax} at once, and resumes as they are answered; every operation is answered once`, async () => {
    const ops = heldOperations();
    const requests = new PushQueue<OperationStreamRequest>();
    const perMessage = 1000;
    const messages = 6; // 6,000 operations: more than the limit
    for (let m = 0; m < messages; m++) requests.push(message(m * perMessage, perMessage));
    requests.close();
    const answers = new Map<number, BatchResult>();
    const stats = new OperationStreamStats();
    const done = drain(serveOperationStream(requests, new AbortController().signal, { runOperation: (op) => ops.run(op), requestMs: 60_000, closing: new AbortController().signal, budget: unlimited(), stats }), answers);

    for (let i = 0; i < 10; i++) await tick();
    // Reading stopped after the message that reached the limit: 5 of 6 messages (5,000 >= 4,096),
    // and of those only the first ones run.
    expect(stats.inFlight).toBe(5 * perMessage);
    expect(ops.started()).toBe(streamOperationsRunningMax);
    // Finishing 1,000 (in turns, as the next ones start): 4,000 in flight, below the limit, so the last message is read.
    for (let finished = 0; finished < 1000; ) {
      const now = Math.min(ops.started(), 1000 - finished);
      ops.finish(now);
      finished += now;
      for (let i = 0; i < 3; i++) await tick();
    }
    for (let i = 0; i < 10; i++) await tick();
    expect(stats.inFlight).toBe(messages * perMessage - 1000);
    expect(ops.started()).toBe(streamOperationsRunningMax);
    while (stats.inFlight > 0) {
      ops.finish(ops.started());
      for (let i = 0; i < 3; i++) await tick();
    }
    expect(await done).toBeUndefined();
    expect(answers.size).toBe(messages * perMessage);
    expect(answers.get(4321)?.get?.value.toString()).toBe('k4321');
  });

  it(`holds at most ${streamBytesInFlightMax} bytes of unwritten answers (plus the operations running), and sends them in messages of at most ${streamAnswerMessageBytesMax} bytes`, async () => {
    const valueBytes = 1024 * 1024;
    const requests = new PushQueue<OperationStreamRequest>();
    requests.push(message(0, 1024));
    requests.close();
    let ran = 0;
    const budget = unlimited();
    const answers = serveOperationStream(requests, new AbortController().signal, {
      runOperation: async () => {
        ran++;
        return { get: { found: true, value: Buffer.alloc(valueBytes) } };
      },
      requestMs: 60_000,
      closing: new AbortController().signal,
      budget,
    });
    // The first message is taken; the generator then waits for the next read, and meanwhile
    // the answers not yet written fill up to the bound and no operation starts after it.
    const first = await answers.next();
    for (let i = 0; i < 50; i++) await tick();
    const bound = streamBytesInFlightMax + streamOperationsRunningMax * valueBytes;
    expect(ran * valueBytes).toBeLessThanOrEqual(bound + valueBytes);
    expect(ran).toBeLessThan(1024);
    expect(budget.inFlightBytes).toBeLessThanOrEqual(bound + 1024 * operationBytes(2, 0));
    let total = first.done === true ? 0 : first.value.results.length;
    for (let next = await answers.next(); next.done !== true; next = await answers.next()) {
      const bytes = next.value.results.reduce((sum, r) => sum + r.result!.get!.value.length, 0);
      expect(bytes).toBeLessThanOrEqual(streamAnswerMessageBytesMax);
      total += next.value.results.length;
    }
    expect(total).toBe(1024);
    expect(ran).toBe(1024);
    expect(budget.inFlightBytes).toBe(0);
  });

  it('when the node closes, reads no more messages, answers the operations it read, then ends without error', async () => {
    const ops = heldOperations();
    const requests = new PushQueue<OperationStreamRequest>();
    const closing = new AbortController();
    requests.push(message(1, 3));
    const answers = new Map<number, BatchResult>();
    const done = drain(serveOperationStream(requests, new AbortController().signal, { runOperation: (op) => ops.run(op), requestMs: 60_000, closing: closing.signal, budget: unlimited() }), answers);
    for (let i = 0; i < 5; i++) await tick();
    expect(ops.started()).toBe(3);
    closing.abort();
    requests.push(message(100, 2)); // arrives after the close: not read
    for (let i = 0; i < 5; i++) await tick();
    expect(ops.started()).toBe(3);
    ops.finish(3);
    expect(await done).toBeUndefined();
    expect([...answers.keys()].sort((a, b) => a - b)).toEqual([1, 2, 3]);
  });

  it('answers an operation that finished while others are still running without waiting for them', async () => {
    const ops = heldOperations();
    const requests = new PushQueue<OperationStreamRequest>();
    requests.push(message(1, 2));
    const stream = serveOperationStream(requests, new AbortController().signal, { runOperation: (op) => ops.run(op), requestMs: 60_000, closing: new AbortController().signal, budget: unlimited() });
    const first = stream.next();
    for (let i = 0; i < 5; i++) await tick();
    ops.finish(1); // id 1 finishes; id 2 still runs
    const response = await first;
    expect(response.done).toBe(false);
    expect(idsOf(response)).toEqual([1]);
    ops.finish(1);
    requests.close();
    expect(idsOf(await stream.next())).toEqual([2]);
    expect((await stream.next()).done).toBe(true);
  });

  it("waits for room in the node's in-flight budget before running a message, without reading on meanwhile", async () => {
    const ops = heldOperations();
    const requests = new PushQueue<OperationStreamRequest>();
    // Room for one of the first message's operations (keys k1-k3) plus the whole second one (k10, k11).
    const budget = new InFlightBudget(operationBytes(2, 0) + 2 * operationBytes(3, 0));
    requests.push(message(1, 3));
    requests.push(message(10, 2));
    requests.push(message(20, 1));
    requests.close();
    const answers = new Map<number, BatchResult>();
    const done = drain(serveOperationStream(requests, new AbortController().signal, { runOperation: (op) => ops.run(op), requestMs: 60_000, closing: new AbortController().signal, budget }), answers);
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(3);
    expect(budget.inFlightBytes).toBe(3 * operationBytes(2, 0));
    ops.finish(1);
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(2); // still no room for both of the second message's operations
    ops.finish(1);
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(3); // k3, k10, k11; the third message waits behind them
    expect(budget.waited).toBe(2);
    ops.finish(3);
    for (let i = 0; i < 10; i++) await tick();
    ops.finish(1);
    expect(await done).toBeUndefined();
    expect([...answers.keys()].sort((a, b) => a - b)).toEqual([1, 2, 3, 10, 11, 20]);
    expect(budget.inFlightBytes).toBe(0);
  });

  it('gives up a message waiting for budget room when the call ends, and leaks no budget', async () => {
    const ops = heldOperations();
    const requests = new PushQueue<OperationStreamRequest>();
    const budget = new InFlightBudget(operationBytes(2, 0));
    requests.push(message(1, 1));
    requests.push(message(2, 1));
    const stream = serveOperationStream(requests, new AbortController().signal, { runOperation: (op) => ops.run(op), requestMs: 60_000, closing: new AbortController().signal, budget });
    const first = stream.next();
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(1); // the second waits for the first's bytes
    ops.finish(1);
    expect(idsOf(await first)).toEqual([1]);
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(1); // the second got the room and runs now
    requests.push(message(3, 1)); // waits behind the second
    for (let i = 0; i < 10; i++) await tick();
    await stream.return(undefined); // the call ends (the client went away)
    for (let i = 0; i < 10; i++) await tick();
    ops.finish(1);
    for (let i = 0; i < 10; i++) await tick();
    expect(ops.started()).toBe(0); // the third message never ran
    expect(budget.inFlightBytes).toBe(0);
    expect(() => budget.tryAcquire(operationBytes(2, 0))).not.toThrow();
  });
});

