import { setImmediate as nextTurn } from 'node:timers/promises';
import type { BatchOperation, BatchResult, OperationStreamRequest, OperationStreamResponse, StreamResult } from '../../gen/kvstore/v1/kvstore.js';
import { RequestDeadline } from '../replication/deadline.js';
import { ResourceLimitError } from '../replication/errors.js';
import { batchOperationBytes, type InFlightBudget, resultBytes } from './in-flight-budget.js';
import type { LateRequests } from './late-requests.js';
import { runningOperationsMaxDefault } from './running-operations.js';
import { untilClosing } from './stream-messages.js';
import { rejectIfMalformed } from './malformed-requests.js';

/** Most operations one OperationStream message may carry (as a Batch call; kvstore.proto). */
export const streamMessageOperationsMax = 1024;
/**
 * Operations of one stream the node works on at once; past it, it reads no more of the stream
 * until some are answered, so a client cannot queue unbounded work (or answers) on a node.
 */
export const streamOperationsInFlightMax = 4096;
/**
 * Bytes one stream may hold: the requests of operations read and not answered plus the answers
 * not yet handed to gRPC. Past it the stream is read no further and operations read wait to
 * start, so a client that sends large values or does not read its answers holds at most this
 * much (plus what its operations already running return). 4096 operations of 1 MiB were 4 GiB.
 */
export const streamBytesInFlightMax = 32 * 1024 * 1024;
/**
 * Operations of one stream running at once (the rest of those read wait their turn): what they
 * return is only known once they ran, so this bounds how far past streamBytesInFlightMax the
 * stream's answers can go (by this many values).
 */
export const streamOperationsRunningMax = runningOperationsMaxDefault;
/** Most answer bytes in one response message (one answer larger than it goes alone). */
export const streamAnswerMessageBytesMax = 4 * 1024 * 1024;

/** What the node's OperationStreams are doing, for /metrics. */
export class OperationStreamStats {
  /** Streams open now. */
  open = 0;
  /** Operations read and not yet answered, over every open stream. */
  inFlight = 0;
  /** Operations answered since start. */
  answered = 0;
}

export interface OperationStreamDeps {
  /** Runs one operation; never rejects (a failure is its result), like a Batch operation. */
  runOperation(operation: BatchOperation, deadline: RequestDeadline): Promise<BatchResult>;
  /** The node's cap on how long an operation may wait for replicas (`timeouts.requestMs`). */
  readonly requestMs: number;
  /** Aborted when the node stops: it reads no more, answers what it read, and ends the stream. */
  readonly closing: AbortSignal;
  /** The node's request-bytes budget: a message waits for room before it runs (and the stream is not read meanwhile). */
  readonly budget: InFlightBudget;
  /** Counted into, if given. */
  readonly stats?: OperationStreamStats;
  /** Default {@link streamBytesInFlightMax}. */
  readonly bytesInFlightMax?: number;
  /** If given, an operation read long after its `deadline_unix_ms` is answered DEADLINE_EXCEEDED and not run. */
  readonly lateRequests?: LateRequests;
}

/**
 * Serves one OperationStream call: runs each operation of each message as it arrives, up to
 * `streamOperationsInFlightMax` and `streamBytesInFlightMax` at once, and answers each one when
 * it finishes, in any order.
 * Results that finish in the same event-loop turn share one response message.
 *
 * Every operation read is answered before the stream ends, whether the client half-closed, the
 * node is stopping, or a message broke a limit (then the stream ends with that error after the
 * answers). Only a cancelled call (the client went away) drops answers, as nobody reads them.
 */
export async function* serveOperationStream(
  requests: AsyncIterable<OperationStreamRequest>,
  callSignal: AbortSignal,
  deps: OperationStreamDeps,
): AsyncGenerator<OperationStreamResponse> {
  let ready: StreamResult[] = [];
  /** Answer bytes in `ready`. */
  let readyBytes = 0;
  let inFlight = 0;
  /** Request bytes of operations read and not yet answered (taken from the node's budget). */
  let requestBytesHeld = 0;
  /** Answer bytes known and not yet handed to gRPC (charged to the node's budget). */
  let answerBytesHeld = 0;
  let readingDone = false;
  let readingError: unknown;
  let wakeWriter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  /** Set when the call ends (the writer returns or is returned): reading stops too. */
  let ended = false;
  /** Aborted when the call ends: a message waiting for budget room gives up. */
  const stopReading = new AbortController();
  /** Operations read and not started because this stream's unwritten answers are at the bound. */
  const toStart: (() => void)[] = [];
  const notifyWriter = (): void => {
    const wake = wakeWriter;
    wakeWriter = undefined;
    wake?.();
  };
  const bytesMax = deps.bytesInFlightMax ?? streamBytesInFlightMax;
  /** Operations started and not yet answered. */
  let started = 0;
  const mayStart = (): boolean => answerBytesHeld < bytesMax && started < streamOperationsRunningMax;
  const startWaiting = (): void => {
    while (toStart.length > 0 && mayStart() && !ended) toStart.shift()!();
  };

  const stats = deps.stats;
  const answer = (id: number, result: BatchResult, bytes: number): void => {
    inFlight--;
    if (stats !== undefined) {
      stats.inFlight--;
      stats.answered++;
    }
    ready.push({ id, result });
    readyBytes += bytes;
    notifyWriter();
  };

  const read = async (): Promise<void> => {
    try {
      for await (const message of untilClosing(requests, deps.closing)) {
        rejectIfMalformed(message);
        const count = message.operations.length;
        if (count > streamMessageOperationsMax) {
          throw new ResourceLimitError(`stream message has ${count} operations, over the limit of ${streamMessageOperationsMax}: split it`);
        }
        if (count === 0) continue;
        // One deadline (one timer, one listener, armed only if an operation waits) per distinct
        // timeout in the message, not per operation: the calls the SDK coalesces into one
        // message carry one or a few distinct remaining times.
        const deadlines = new Map<number, { deadline: RequestDeadline; unanswered: number }>();
        const entries = message.operations.map((op) => {
          const timeoutMs = op.timeoutMs === 0 ? deps.requestMs : Math.min(op.timeoutMs, deps.requestMs);
          let entry = deadlines.get(timeoutMs);
          if (entry === undefined) deadlines.set(timeoutMs, (entry = { deadline: new RequestDeadline(callSignal, timeoutMs), unanswered: 0 }));
          entry.unanswered++;
          return entry;
        });
        const bytes = message.operations.map(({ operation }) => batchOperationBytes(operation));
        const messageBytes = bytes.reduce((sum, b) => sum + b, 0);
        try {
          await deps.budget.acquire(messageBytes, stopReading.signal);
        } catch {
          // The call ended while the message waited: it never ran and nobody reads an answer.
          for (const entry of deadlines.values()) entry.deadline.disarm();
          return;
        }
        if (ended) {
          deps.budget.release(messageBytes);
          for (const entry of deadlines.values()) entry.deadline.disarm();
          return;
        }
        inFlight += count;
        requestBytesHeld += messageBytes;
        if (stats !== undefined) stats.inFlight += count;
        // Checked when the message is let in to run (after any wait for budget room), once per message for the time.
        const late = deps.lateRequests;
        const nowMs = late?.now() ?? 0;
        message.operations.forEach((op, i) => {
          const entry = entries[i]!;
          const settle = (result: BatchResult): void => {
            if (--entry.unanswered === 0) entry.deadline.disarm();
            deps.budget.release(bytes[i]!);
            requestBytesHeld -= bytes[i]!;
            // Counted until it is handed to gRPC; an answer nobody will read is not counted.
            const answerBytes = ended ? 0 : resultBytes(result);
            deps.budget.charge(answerBytes);
            answerBytesHeld += answerBytes;
            answer(op.id, result, answerBytes);
          };
          const refused = late?.checkOperation(op.deadlineUnixMs, nowMs);
          if (refused !== undefined) {
            settle(refused);
            return;
          }
          const start = (): void => {
            started++;
            const settleStarted = (result: BatchResult): void => {
              started--;
              settle(result);
              startWaiting();
            };
            deps.runOperation(op.operation ?? {}, entry.deadline).then(
              settleStarted,
              // runOperation turns every failure into a result; this is a last resort.
              (error: unknown) => settleStarted({ error: { code: internalCode, message: `operation failed: ${String(error)}` } }),
            );
          };
          if (mayStart() && toStart.length === 0) start();
          else toStart.push(() => {
            // The call may have ended while it waited: then it is answered without running.
            if (ended) settle({ error: { code: cancelledCode, message: 'not run: the call ended first' } });
            else start();
          });
        });
        while ((inFlight >= streamOperationsInFlightMax || requestBytesHeld + answerBytesHeld >= bytesMax) && !ended) {
          await new Promise<void>((resolve) => (wakeReader = resolve));
        }
        if (ended) return;
      }
    } catch (error) {
      readingError = error;
    } finally {
      readingDone = true;
      notifyWriter();
    }
  };
  const resumeReading = (): void => {
    const wake = wakeReader;
    wakeReader = undefined;
    wake?.();
  };
  /** Gives back the budget of answers handed to gRPC (or dropped), starting and reading more. */
  const written = (bytes: number): void => {
    deps.budget.release(bytes);
    answerBytesHeld -= bytes;
    startWaiting();
    resumeReading();
  };
  void read();

  if (stats !== undefined) stats.open++;
  let yielding = 0;
  try {
    for (;;) {
      if (ready.length === 0) {
        if (readingDone && inFlight === 0) break;
        await new Promise<void>((resolve) => (wakeWriter = resolve));
        continue;
      }
      // Operations finishing in this turn (one commit acknowledges many) share the message, up
      // to streamAnswerMessageBytesMax of answers (then the rest go in the next ones).
      if (inFlight > 0) await nextTurn();
      let results = ready;
      yielding = readyBytes;
      if (readyBytes > streamAnswerMessageBytesMax) {
        let count = 0;
        let bytes = 0;
        while (count < ready.length && (count === 0 || bytes + resultBytes(ready[count]!.result!) <= streamAnswerMessageBytesMax)) bytes += resultBytes(ready[count++]!.result!);
        results = ready.slice(0, count);
        ready = ready.slice(count);
        yielding = bytes;
        readyBytes -= bytes;
      } else {
        ready = [];
        readyBytes = 0;
      }
      if (inFlight < streamOperationsInFlightMax) resumeReading();
      yield { results };
      const bytes = yielding;
      yielding = 0;
      written(bytes);
    }
  } finally {
    ended = true;
    stopReading.abort();
    written(yielding + readyBytes);
    readyBytes = 0;
    // Operations that never started are answered (to nobody) so their budget is given back.
    while (toStart.length > 0) toStart.shift()!();
    resumeReading();
    if (stats !== undefined) stats.open--;
  }
  if (readingError !== undefined && !callSignal.aborted) throw readingError;
}

/** google.rpc.Code INTERNAL. */
const internalCode = 13;
/** google.rpc.Code CANCELLED. */
const cancelledCode = 1;
