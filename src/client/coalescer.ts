import { ClientError, Metadata, Status } from 'nice-grpc';
import { KVStoreDefinition, type BatchOperation, type BatchResult, type KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { deadlineMetadataKey, deadlineMetadataValue } from '../common/deadline-header.js';

/** Most operations one coalesced Batch call carries (the node accepts up to 1024). */
export const coalescedOperationsMax = 256;
/** Payload (keys and values) after which a Batch is sent without waiting for more operations. */
export const coalescedBytesMax = 1024 * 1024;
/** Operations carrying more bytes than this go alone, as their own unary call. */
export const coalescedOperationBytesMax = 64 * 1024;
/** grpc-timeout allows at most 8 digits. */
export const grpcTimeoutMsMax = 99_999_999;

const batchPath = `/${KVStoreDefinition.fullName}/${KVStoreDefinition.methods.batch.name}`;
/** The method named in errors of operations the coalescer settles itself (not yet sent). */
const coalescedPath = `/${KVStoreDefinition.fullName}/(coalesced)`;

/** What an operation's caller gives up with: its deadline or cancellation (a CallScope). */
export interface Abortable {
  readonly aborted: boolean;
  /** True once it aborted because its deadline passed (not because its caller cancelled). */
  readonly timedOut: boolean;
  /** Calls `listener` once on abort; returns the function that unregisters it. */
  onAbort(listener: () => void): () => void;
}

/** The rejection of an operation whose caller gave up (the caller reports why). */
export const abandoned = new Error('the call was abandoned (deadline passed or cancelled)');

/** An operation waiting to be sent or answered. */
export interface QueuedOperation {
  readonly operation: BatchOperation;
  readonly deadlineAt: number;
  readonly abortable: Abortable;
  settled: boolean;
  resolve(result: BatchResult): void;
  reject(error: unknown): void;
}

/** How a coalesced group of operations travels to the node. */
export interface OperationTransport {
  /** Sends `batch` (not empty; none of it aborted yet) and settles each operation. */
  send(batch: QueuedOperation[]): void;
  /** Fails what is in flight and releases the transport (the client is closing). */
  close(): void;
}

/**
 * Coalesces the put/get/delete calls made on one connection in the same event-loop turn into one
 * send over an {@link OperationTransport} (like ioredis's auto-pipelining): one OperationStream
 * message, or one Batch call. A node spends most of a small request's CPU on the per-call gRPC
 * work, so under concurrency this is the largest throughput lever the client has; a lone call
 * waits only for the end of the current turn (setImmediate), not for a timer.
 *
 * Each operation keeps its own semantics: its own result or error (a failed operation answers a
 * ClientError with the code the unary RPC would have ended with), its own deadline and
 * cancellation (an operation whose caller gives up is rejected at once and, if still queued, not
 * sent). Operations are watched through a light listener (Abortable), not an AbortSignal each:
 * the profile of the load generator showed AbortController and EventTarget work per call at ~11%
 * of its CPU.
 */
export class OperationCoalescer {
  private queue: QueuedOperation[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  private closed = false;

  constructor(private readonly transport: OperationTransport) {}

  /** Whether an operation of `bytes` payload is sent through a batch (else: as a unary call). */
  static accepts(bytes: number): boolean {
    return bytes <= coalescedOperationBytesMax;
  }

  /**
   * Queues `operation` for the next send on this connection. Rejects when `abortable` aborts
   * (the caller tells a deadline from a cancellation) or with the transport's error.
   */
  submit(operation: BatchOperation, bytes: number, deadlineAt: number, abortable: Abortable): Promise<BatchResult> {
    return new Promise<BatchResult>((resolve, reject) => {
      if (abortable.aborted) {
        reject(abandoned);
        return;
      }
      if (this.closed) {
        reject(new ClientError(coalescedPath, Status.CANCELLED, 'the client was closed'));
        return;
      }
      const queued: QueuedOperation = { operation, deadlineAt, abortable, settled: false, resolve, reject };
      this.queue.push(queued);
      this.queuedBytes += bytes;
      if (this.queue.length >= coalescedOperationsMax || this.queuedBytes >= coalescedBytesMax) {
        this.flush();
      } else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => {
          this.flushScheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Fails what is in flight; queued operations are not sent. */
  close(): void {
    this.closed = true;
    const closedError = new ClientError(coalescedPath, Status.CANCELLED, 'the client was closed');
    for (const queued of this.queue) queued.reject(closedError);
    this.queue = [];
    this.transport.close();
  }

  /** Sends everything queued together. */
  private flush(): void {
    // An operation whose caller gave up while it was queued is not sent.
    const batch: QueuedOperation[] = [];
    for (const queued of this.queue) {
      if (queued.abortable.aborted) queued.reject(abandoned);
      else batch.push(queued);
    }
    this.queue = [];
    this.queuedBytes = 0;
    if (batch.length > 0) this.transport.send(batch);
  }
}

/**
 * Makes `queued` settle once: the first of resolve, reject and its caller's abort wins, and
 * `onAbort` runs after an abort rejected it. Settling unregisters the abort listener.
 */
export function settleOnce(queued: QueuedOperation, onAbort: () => void): void {
  const unregister = queued.abortable.onAbort(() => {
    queued.reject(abandoned);
    onAbort();
  });
  queued.reject = wrapSettle(queued, queued.reject, unregister);
  queued.resolve = wrapSettle(queued, queued.resolve, unregister);
}

/** The result of an operation, or the ClientError of its failed result. */
export function settleWithResult(queued: QueuedOperation, result: BatchResult, path: string): void {
  if (result.error !== undefined) queued.reject(new ClientError(path, result.error.code as Status, result.error.message));
  else queued.resolve(result);
}

/**
 * Sends each coalesced group as one unary Batch call; the call is cancelled once all gave up. A
 * node that does not serve Batch (older than it) answers UNIMPLEMENTED before running anything:
 * the operations are then resent, and all later ones sent, as their own unary Put/Get/Delete calls.
 */
export class BatchCallTransport implements OperationTransport {
  private readonly inFlight = new Set<AbortController>();
  private unsupported = false;

  constructor(private readonly client: KVStoreClient) {}

  send(batch: QueuedOperation[]): void {
    if (this.unsupported) {
      for (const queued of batch) this.sendAlone(queued);
      return;
    }
    const controller = new AbortController();
    let pending = batch.length;
    let deadlineAt = 0;
    for (const queued of batch) {
      deadlineAt = Math.max(deadlineAt, queued.deadlineAt);
      // Once every operation of the batch gave up, so does the call.
      settleOnce(queued, () => {
        if (--pending === 0) controller.abort();
      });
    }
    this.inFlight.add(controller);
    this.client
      .batch({ operations: batch.map((q) => q.operation) }, callOptions(controller, deadlineAt))
      .then(
        (response) => {
          batch.forEach((queued, i) => {
            const result = response.results[i];
            if (result === undefined) {
              queued.reject(new ClientError(batchPath, Status.INTERNAL, `the node answered ${response.results.length} results for ${batch.length} operations`));
            } else {
              settleWithResult(queued, result, batchPath);
            }
          });
        },
        (error: unknown) => {
          if (error instanceof ClientError && error.code === Status.UNIMPLEMENTED) {
            this.unsupported = true;
            for (const queued of batch) if (!queued.settled) this.sendAlone(unsettled(queued));
            return;
          }
          for (const queued of batch) queued.reject(error);
        },
      )
      .finally(() => this.inFlight.delete(controller));
  }

  close(): void {
    for (const controller of this.inFlight) controller.abort();
    this.inFlight.clear();
  }

  /** One operation as its own unary call (for a node without Batch). */
  private sendAlone(queued: QueuedOperation): void {
    const controller = new AbortController();
    settleOnce(queued, () => controller.abort());
    const options = callOptions(controller, queued.deadlineAt);
    const { put, get, delete: del } = queued.operation;
    const call: Promise<BatchResult> =
      put !== undefined
        ? this.client.put(put, options).then((answer) => ({ put: answer }))
        : get !== undefined
          ? this.client.get(get, options).then((answer) => ({ get: answer }))
          : del !== undefined
            ? this.client.delete(del, options).then((answer) => ({ delete: answer }))
            : Promise.reject(new ClientError(batchPath, Status.INVALID_ARGUMENT, 'operation has none of put, get, delete'));
    this.inFlight.add(controller);
    call.then(queued.resolve, queued.reject).finally(() => this.inFlight.delete(controller));
  }
}

/** A call's signal and its deadline, told to the node too: relative (grpc-timeout) and absolute (kvstore-deadline-unix-ms). */
function callOptions(controller: AbortController, deadlineAt: number) {
  const timeoutMs = Math.min(grpcTimeoutMsMax, Math.max(1, Math.ceil(deadlineAt - Date.now())));
  const metadata = Metadata().set('grpc-timeout', `${timeoutMs}m`);
  const deadline = deadlineMetadataValue(deadlineAt);
  if (deadline !== undefined) metadata.set(deadlineMetadataKey, deadline);
  return { signal: controller.signal, metadata };
}

/**
 * A fresh QueuedOperation for an operation that was sent but must be sent again (its node
 * answered UNIMPLEMENTED, so it did not run), settling the original: the original's settle-once
 * wrappers (and abort listener) stay in place.
 */
export function unsettled(queued: QueuedOperation): QueuedOperation {
  return {
    operation: queued.operation,
    deadlineAt: queued.deadlineAt,
    abortable: queued.abortable,
    settled: false,
    resolve: (result) => queued.resolve(result),
    reject: (error) => queued.reject(error),
  };
}

/** Wraps a settle function so it runs once, then cleans up. */
function wrapSettle<T>(queued: QueuedOperation, settleFn: (value: T) => void, cleanup: () => void): (value: T) => void {
  return (value: T) => {
    if (queued.settled) return;
    queued.settled = true;
    cleanup();
    settleFn(value);
  };
}
