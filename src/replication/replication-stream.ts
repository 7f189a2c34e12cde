import type { ReplicateRequest, ReplicateResponse, ReplicateStreamRequest, ReplicateStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import type { PeerLink } from './peer-link.js';

/** The stream ended or was cut before answering a batch. */
export class ReplicationStreamError extends Error {
  override name = 'ReplicationStreamError';
}

/** An AsyncIterable fed by push(): the request side of a client stream. */
class PushQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | undefined;
  private closed = false;

  push(item: T): void {
    const waiting = this.waiting;
    if (waiting !== undefined) {
      this.waiting = undefined;
      waiting({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  close(): void {
    this.closed = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) return Promise.resolve({ value: this.items.shift()!, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** One open ReplicateStream call. */
interface OpenStream {
  readonly requests: PushQueue<ReplicateStreamRequest>;
  readonly responses: AsyncIterator<ReplicateStreamResponse>;
  readonly controller: AbortController;
}

/**
 * The delivery loop's connection to one peer: batches sent as messages of one long-lived
 * ReplicateStream call, opened on first use and again after any failure. One batch at a time
 * (the delivery loop's rule), so the n-th answer is the n-th batch's. Each batch has `callMs` to
 * be answered; past it (a black-holed link, a stuck peer) the stream is cancelled and the batch
 * fails like a timed-out unary call.
 */
export class ReplicationStream {
  private open: OpenStream | undefined;

  constructor(
    private readonly link: PeerLink,
    private readonly callMs: number,
  ) {}

  /** Sends one batch and resolves with its answer once the peer committed it durably. */
  async send(batch: ReplicateRequest): Promise<ReplicateResponse> {
    const stream = (this.open ??= this.start());
    stream.requests.push({ batch });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.reset(stream);
        reject(new ReplicationStreamError(`no answer from ${this.link.id} within ${this.callMs}ms`));
      }, this.callMs);
    });
    try {
      const next = stream.responses.next();
      next.catch(() => undefined); // a reset after the timeout rejects it: nobody waits anymore
      const result = await Promise.race([next, timeout]);
      if (result.done === true || result.value.ack === undefined) {
        throw new ReplicationStreamError(`${this.link.id} ended the replication stream`);
      }
      return result.value.ack;
    } catch (err) {
      this.reset(stream);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the stream (on stop). */
  close(): void {
    if (this.open !== undefined) this.reset(this.open);
  }

  private start(): OpenStream {
    const requests = new PushQueue<ReplicateStreamRequest>();
    const controller = new AbortController();
    const responses = this.link.client.replicateStream(requests, { signal: controller.signal })[Symbol.asyncIterator]();
    return { requests, responses, controller };
  }

  /** Cancels `stream` (if still current) so that the next send opens a new one. */
  private reset(stream: OpenStream): void {
    if (this.open === stream) this.open = undefined;
    stream.requests.close();
    stream.controller.abort();
  }
}
