import { ClientError, Status } from 'nice-grpc';
import {
  KVStoreDefinition,
  type KVStoreClient,
  type OperationStreamRequest,
  type StreamOperation,
} from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../common/push-queue.js';
import { BatchCallTransport, settleOnce, settleWithResult, unsettled, type OperationTransport, type QueuedOperation } from './coalescer.js';

const streamPath = `/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.operationStream.name}`;
/** StreamOperation.timeout_ms is a uint32. */
const operationTimeoutMsMax = 0xffff_ffff;

/** One open OperationStream call. */
interface OpenStream {
  readonly requests: PushQueue<OperationStreamRequest>;
  readonly controller: AbortController;
  /** Operations sent and not yet answered, by id. */
  readonly inFlight: Map<number, QueuedOperation>;
  /** Response messages received on this stream so far. */
  answers: number;
}

/**
 * Sends coalesced operations as messages on one long-lived OperationStream per connection, and
 * matches answers to operations by id (they come back in any order). A message on an open
 * stream costs a fraction of a unary call: on our 2-core VM, one round trip is ~130-160 µs and
 * ~100 µs of client CPU against ~520 µs and ~530 µs for a unary call (BENCHMARKS.md).
 *
 * Failure rules, the same as for a Batch call:
 * - the stream failing (connection lost, node stopping) fails every operation in flight on it
 *   with the stream's error (UNAVAILABLE for a lost connection); the next send opens a new one;
 * - an operation whose caller gives up is rejected at once; its late answer is dropped;
 * - a stream on which an operation's deadline passed with no answer at all since it was sent is
 *   presumed dead (a black-holed connection) and is cancelled, as its unanswered operations
 *   would otherwise wait on it for their whole deadlines too;
 * - a node that does not serve OperationStream (an older version answers UNIMPLEMENTED before
 *   running anything) gets the operations, and every later one, as Batch calls.
 */
export class StreamTransport implements OperationTransport {
  private current: OpenStream | undefined;
  private nextId = 0;
  private unsupported = false;
  private closed = false;
  private readonly fallback: BatchCallTransport;

  constructor(private readonly client: KVStoreClient) {
    this.fallback = new BatchCallTransport(client);
  }

  send(batch: QueuedOperation[]): void {
    if (this.closed) {
      const closedError = new ClientError(streamPath, Status.CANCELLED, 'the client was closed');
      for (const queued of batch) queued.reject(closedError);
      return;
    }
    if (this.unsupported) {
      this.fallback.send(batch);
      return;
    }
    const stream = (this.current ??= this.open());
    const now = Date.now();
    const answersBefore = stream.answers;
    const operations: StreamOperation[] = [];
    for (const queued of batch) {
      this.nextId = (this.nextId + 1) >>> 0;
      const id = this.nextId;
      stream.inFlight.set(id, queued);
      settleOnce(queued, () => {
        stream.inFlight.delete(id);
        // Counted in messages, not time: an answer in the same millisecond as the send is not one after it.
        if (queued.abortable.timedOut && stream.answers === answersBefore) {
          this.fail(stream, new ClientError(streamPath, Status.UNAVAILABLE, 'no answer on the operation stream before a deadline passed: reconnecting'));
        }
      });
      const timeoutMs = Math.min(operationTimeoutMsMax, Math.max(1, Math.ceil(queued.deadlineAt - now)));
      // The absolute deadline too: a node that reads this only after it passed (a partition
      // healing) answers DEADLINE_EXCEEDED instead of applying it (kvstore.proto, "Late requests").
      const deadlineUnixMs = Number.isFinite(queued.deadlineAt) && queued.deadlineAt > 0 ? BigInt(Math.ceil(queued.deadlineAt)) : 0n;
      operations.push({ id, timeoutMs, operation: queued.operation, deadlineUnixMs });
    }
    stream.requests.push({ operations });
  }

  close(): void {
    this.closed = true;
    if (this.current !== undefined) this.fail(this.current, new ClientError(streamPath, Status.CANCELLED, 'the client was closed'));
    this.fallback.close();
  }

  private open(): OpenStream {
    const stream: OpenStream = { requests: new PushQueue(), controller: new AbortController(), inFlight: new Map(), answers: 0 };
    void this.readAnswers(stream);
    return stream;
  }

  /** Settles each answered operation, until the stream ends. */
  private async readAnswers(stream: OpenStream): Promise<void> {
    try {
      for await (const response of this.client.operationStream(stream.requests, { signal: stream.controller.signal })) {
        stream.answers++;
        for (const { id, result } of response.results) {
          const sent = stream.inFlight.get(id);
          if (sent === undefined) continue; // its caller gave up
          stream.inFlight.delete(id);
          settleWithResult(sent, result ?? {}, streamPath);
        }
      }
      this.fail(stream, new ClientError(streamPath, Status.UNAVAILABLE, 'the node ended the operation stream (stopping?)'));
    } catch (error) {
      if (error instanceof ClientError && error.code === Status.UNIMPLEMENTED && stream.answers === 0) {
        this.fallBackToBatch(stream);
        return;
      }
      this.fail(stream, error instanceof Error ? error : new ClientError(streamPath, Status.UNKNOWN, String(error)));
    }
  }

  /** The node has no OperationStream: nothing sent on it ran, so it all goes as Batch calls. */
  private fallBackToBatch(stream: OpenStream): void {
    this.unsupported = true;
    if (this.current === stream) this.current = undefined;
    stream.requests.close();
    const waiting = [...stream.inFlight.values()].filter((queued) => !queued.settled);
    stream.inFlight.clear();
    if (waiting.length > 0) this.fallback.send(waiting.map(unsettled));
  }

  /** Ends `stream` and fails what waits on it; the next send opens a new stream. */
  private fail(stream: OpenStream, error: Error): void {
    if (this.current === stream) this.current = undefined;
    stream.requests.close();
    stream.controller.abort();
    const waiting = [...stream.inFlight.values()];
    stream.inFlight.clear();
    for (const queued of waiting) queued.reject(error);
  }
}
