import { type Clock, systemClock, type TimerHandle } from '../platform/clock.js';
import { RequestTimeoutError } from './errors.js';

/**
 * What RequestDeadline needs of a call's cancellation: an AbortSignal, or the lighter one the
 * direct unary path makes per call (direct-unary.ts), since an AbortController per call showed
 * in the unary profile at ~12 µs per put (BENCHMARKS.md).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * How long a request may wait for replicas: the client's cancellation or deadline (`signal`,
 * aborted by gRPC when the call's deadline passes) and the server's own cap (`timeoutMs`,
 * counted from when the request first waits). One per call, shared by every operation of a
 * Batch: one timer and one abort listener however many operations wait, armed only when one
 * does (most requests never wait long enough to need a timer). The profile showed a combined
 * AbortSignal per request at ~4% of server CPU, and per-operation timers would multiply that.
 */
export class RequestDeadline {
  private readonly waiters = new Set<() => void>();
  private timer: TimerHandle | undefined;
  private expired: boolean;
  private readonly expire = (): void => {
    this.expired = true;
    this.disarm();
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const fail of waiters) fail();
  };

  constructor(
    private readonly signal: CancelSignal,
    private readonly timeoutMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.expired = signal.aborted;
  }

  /**
   * Resolves with `promise`, or rejects with RequestTimeoutError(message()) once the signal
   * aborts or the timeout passes, whichever comes first.
   */
  race<T>(promise: Promise<T>, message: () => string): Promise<T> {
    if (this.expired || this.signal.aborted) {
      // The request was read after its deadline (a paused node, a healed partition): `promise`
      // may still reject, and nobody else listens to it. Unobserved, that rejection would end
      // the process (Node's default for unhandled rejections).
      promise.catch(() => {});
      return Promise.reject(new RequestTimeoutError(message()));
    }
    if (this.timer === undefined) {
      this.timer = this.clock.setTimer(this.expire, this.timeoutMs);
      this.signal.addEventListener('abort', this.expire, { once: true });
    }
    return new Promise<T>((resolve, reject) => {
      const fail = (): void => reject(new RequestTimeoutError(message()));
      this.waiters.add(fail);
      promise.then(
        (value) => {
          this.waiters.delete(fail);
          resolve(value);
        },
        (error: unknown) => {
          this.waiters.delete(fail);
          reject(error);
        },
      );
    });
  }

  /** Stops the timer once the request is answered (waiters left over keep nothing alive). */
  disarm(): void {
    if (this.timer === undefined) return;
    this.timer.cancel();
    this.timer = undefined;
    this.signal.removeEventListener('abort', this.expire);
  }
}
