import { Status } from 'nice-grpc';
import { expect } from 'vitest';
import type { BatchOperation, BatchResult, KVStoreClient, OperationStreamRequest, OperationStreamResponse, StreamOperation } from '../../gen/kvstore/v1/kvstore.js';
import { PushQueue } from '../../src/common/push-queue.js';
import { show } from './batch-results.js';
import { waitFor } from './wait.js';

/** A stream operation; `timeoutMs` 0 is the node's own cap; `deadlineUnixMs` 0 sends no absolute deadline. */
export function op(id: number, operation: BatchOperation | undefined, timeoutMs = 0, deadlineUnixMs = 0n): StreamOperation {
  return { id, timeoutMs, operation, deadlineUnixMs };
}

/** Where an answer arrived: which response message, and its position in that message. */
export interface Answer {
  readonly result: BatchResult;
  readonly message: number;
  readonly position: number;
}

/** How a stream ended: OK (`code` 0) or the error status it ended with. */
export interface StreamEnd {
  readonly code: Status;
  readonly details: string;
}

/**
 * A raw OperationStream call: `send` pushes a request message, `end` half-closes, and every
 * response message is recorded in arrival order, with each answer indexed by id.
 */
export class RawStream {
  private readonly requests = new PushQueue<OperationStreamRequest>();
  private readonly controller = new AbortController();
  readonly messages: OperationStreamResponse[] = [];
  private readonly answers = new Map<number, Answer[]>();
  /** Settles when the response stream ends, with how it ended (never rejects). */
  readonly ended: Promise<StreamEnd>;
  private endedWith: StreamEnd | undefined;

  constructor(client: KVStoreClient) {
    this.ended = (async (): Promise<StreamEnd> => {
      try {
        for await (const message of client.operationStream(this.requests, { signal: this.controller.signal })) {
          const index = this.messages.length;
          this.messages.push(message);
          message.results.forEach(({ id, result }, position) => {
            const list = this.answers.get(id) ?? [];
            list.push({ result: result ?? {}, message: index, position });
            this.answers.set(id, list);
          });
        }
        return { code: Status.OK, details: '' };
      } catch (err) {
        const e = err as { code?: unknown; details?: unknown };
        if (typeof e.code === 'number') return { code: e.code as Status, details: String(e.details) };
        return { code: Status.UNKNOWN, details: `not a gRPC error: ${String(err)}` };
      }
    })().then((end) => (this.endedWith = end));
  }

  send(operations: StreamOperation[]): void {
    this.requests.push({ operations });
  }

  /** Half-closes: no more request messages. */
  end(): void {
    this.requests.close();
  }

  /** Cancels the call (teardown). */
  cancel(): void {
    this.requests.close();
    this.controller.abort();
  }

  get hasEnded(): boolean {
    return this.endedWith !== undefined;
  }

  /** Every answer carrying `id` so far. */
  answersTo(id: number): Answer[] {
    return this.answers.get(id) ?? [];
  }

  /** The one answer to `id` (fails if there are several or none). */
  answer(id: number): Answer {
    const list = this.answersTo(id);
    expect(list.length, `answers to id ${id}: ${show(list)}`).toBe(1);
    return list[0]!;
  }

  result(id: number): BatchResult {
    return this.answer(id).result;
  }

  /** All ids answered so far, one entry per answer. */
  answeredIds(): number[] {
    return this.messages.flatMap((m) => m.results.map((r) => r.id));
  }

  /** Waits until every id in `ids` has an answer (or the stream ended, which fails the wait's check below). */
  async waitForAnswers(ids: readonly number[], deadlineMs = 20_000): Promise<void> {
    await waitFor(
      `answers to ids ${ids.length > 10 ? `${ids.slice(0, 10).join(',')}...` : ids.join(',')}`,
      () => ids.every((id) => this.answersTo(id).length > 0) || (this.hasEnded ? `stream ended: ${show(this.endedWith)}` : false),
      deadlineMs,
    );
    const missing = ids.filter((id) => this.answersTo(id).length === 0);
    expect(missing, `ids not answered (stream ended ${show(this.endedWith)})`).toEqual([]);
  }
}
