import { PushQueue } from '../common/push-queue.js';
import type { Clock, TimerHandle } from '../platform/clock.js';

/** The stream ended, failed or went unanswered before a request's answer came. */
export class PeerStreamError extends Error {
  override name = 'PeerStreamError';
}

interface Pending<Res> {
  resolve(response: Res): void;
  reject(error: Error): void;
  readonly timer: TimerHandle;
}

/** One open stream call and the requests still waiting for their answers, oldest first. */
interface OpenStream<Res> {
  readonly requests: PushQueue<unknown>;
  readonly controller: AbortController;
  readonly pending: Pending<Res>[];
}

/**
 * Request/answer over one long-lived bidirectional stream to a peer: the peer answers every
 * request message with one response message, in order, so answers are matched to requests
 * first-in first-out. A message on an open stream costs a fraction of a new unary call (no
 * per-call headers, deadline or call setup), which the profile showed as the largest cost of a
 * replication round.
 *
 * The stream is opened on first use and again after any failure. Each request has `callMs` to be
 * answered; past it (a black-holed link, a stuck peer) the stream is cancelled and every request
 * still waiting on it fails, like timed-out unary calls.
 */
export class PeerStream<Req, Res> {
  private current: OpenStream<Res> | undefined;

  /**
   * @param open starts the stream call (a nice-grpc bidi method bound to the peer's client)
   * @param peerId for error messages
   */
  constructor(
    private readonly open: (requests: AsyncIterable<Req>, options: { signal: AbortSignal }) => AsyncIterable<Res>,
    private readonly peerId: string,
    private readonly callMs: number,
    private readonly clock: Clock,
    /** Told of every answer (contact) and every failure but our own close (the peer link). */
    private readonly reporter?: { markContact(): void; markFailure(error: unknown): void },
  ) {}

  /** Sends `request` and resolves with its answer. */
  request(request: Req): Promise<Res> {
    const stream = (this.current ??= this.start());
    return new Promise<Res>((resolve, reject) => {
      const timer = this.clock.setTimer(() => this.fail(stream, new PeerStreamError(`no answer from ${this.peerId} within ${this.callMs}ms`), true), this.callMs);
      stream.pending.push({ resolve, reject, timer });
      stream.requests.push(request);
    });
  }

  /** Ends the stream (on stop); requests still waiting fail. */
  close(): void {
    if (this.current !== undefined) this.fail(this.current, new PeerStreamError(`stream to ${this.peerId} closed`));
  }

  private start(): OpenStream<Res> {
    const stream: OpenStream<Res> = { requests: new PushQueue<unknown>(), controller: new AbortController(), pending: [] };
    void this.readAnswers(stream);
    return stream;
  }

  /** Hands each answer to the oldest waiting request, until the stream ends. */
  private async readAnswers(stream: OpenStream<Res>): Promise<void> {
    try {
      for await (const response of this.open(stream.requests as PushQueue<Req>, { signal: stream.controller.signal })) {
        const waiter = stream.pending.shift();
        if (waiter === undefined) throw new PeerStreamError(`${this.peerId} answered a request that was not sent`);
        waiter.timer.cancel();
        this.reporter?.markContact();
        waiter.resolve(response);
      }
      this.fail(stream, new PeerStreamError(`${this.peerId} ended the stream`), true);
    } catch (err) {
      this.fail(stream, err instanceof Error ? err : new PeerStreamError(String(err)), true);
    }
  }

  /** Cancels `stream` and fails what waits on it; the next request opens a new stream. */
  private fail(stream: OpenStream<Res>, error: Error, report = false): void {
    // Our own close (or a second failure of a stream already failed) says nothing about the peer.
    if (report && !stream.controller.signal.aborted) this.reporter?.markFailure(error);
    if (this.current === stream) this.current = undefined;
    stream.requests.close();
    stream.controller.abort();
    const waiting = stream.pending.splice(0);
    for (const waiter of waiting) {
      waiter.timer.cancel();
      waiter.reject(error);
    }
  }
}
