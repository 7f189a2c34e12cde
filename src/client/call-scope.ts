import { Status } from 'nice-grpc';
import { KvError } from './errors.js';

/**
 * The lifetime of one SDK call: one AbortSignal that fires when the deadline passes or when the
 * caller's signal aborts, whichever comes first, and tells the two apart afterwards.
 *
 * nice-grpc has no deadline option of its own (that is a middleware we do not use), so every
 * attempt of a call gets `signal` and the deadline is enforced here.
 */
export class CallScope {
  /** Created on first use of {@link signal}: a coalesced call never needs one. */
  private controller: AbortController | undefined;
  private abortedFlag = false;
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private deadlineHit = false;
  private readonly onCallerAbort = (): void => {
    this.abort();
  };
  /** `Date.now()` value at which the current deadline passes. */
  deadlineAt = 0;

  /**
   * @param budgetMs how long the call may take (re-armed with {@link arm} by streaming calls)
   * @param callerSignal the caller's signal, if any
   */
  constructor(
    readonly budgetMs: number,
    private readonly callerSignal: AbortSignal | undefined,
  ) {
    if (callerSignal?.aborted === true) {
      this.abort();
    } else {
      callerSignal?.addEventListener('abort', this.onCallerAbort, { once: true });
      this.arm();
    }
  }

  /** Aborts when the deadline passes or the caller aborts. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortedFlag) this.controller.abort();
    }
    return this.controller.signal;
  }

  /** True once the deadline passed or the caller aborted. */
  get aborted(): boolean {
    return this.abortedFlag;
  }

  /** True once it aborted because the deadline passed. */
  get timedOut(): boolean {
    return this.deadlineHit;
  }

  /**
   * Calls `listener` once when the scope aborts (a lighter {@link signal} listener); returns the
   * function that unregisters it.
   */
  onAbort(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Milliseconds left before the deadline (0 when passed). */
  remainingMs(): number {
    return Math.max(0, this.deadlineAt - Date.now());
  }

  /** (Re)starts the deadline: it passes `budgetMs` from now. */
  arm(): void {
    if (this.aborted) return;
    this.disarm();
    this.deadlineAt = Date.now() + this.budgetMs;
    this.timer = setTimeout(() => {
      this.deadlineHit = true;
      this.abort();
    }, this.budgetMs);
  }

  /** Stops the deadline clock (while a stream's consumer holds a batch). */
  disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.deadlineAt = Number.POSITIVE_INFINITY;
  }

  private abort(): void {
    if (this.abortedFlag) return;
    this.abortedFlag = true;
    this.controller?.abort();
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const listener of listeners) listener();
  }

  /** Waits `ms`, or less if the scope aborts first (the caller checks {@link aborted}). */
  sleep(ms: number): Promise<void> {
    if (this.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.signal.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * The error to throw once {@link aborted}: `DEADLINE_EXCEEDED` or `CANCELLED`.
   *
   * @param unreachable no node was reached before the abort
   * @param writeInFlight a mutation had been sent and not answered
   */
  abortError(operation: string, endpoint: string, unreachable: boolean, writeInFlight = false, what = ''): KvError {
    const unsure = writeInFlight ? '; the write may still be applied (it is not rolled back)' : '';
    if (this.deadlineHit) {
      const done = what === '' ? `did not complete within ${this.budgetMs}ms` : what;
      const reason = unreachable ? `${done} (no endpoint could be connected to)` : done;
      return new KvError(Status.DEADLINE_EXCEEDED, `${reason}${unsure}`, endpoint, { operation, unreachable });
    }
    return new KvError(Status.CANCELLED, `cancelled by the caller's signal${unsure}`, endpoint, {
      operation,
      unreachable,
      cause: this.callerSignal?.reason,
    });
  }

  /** Releases the timer and the listener on the caller's signal. */
  dispose(): void {
    this.disarm();
    this.callerSignal?.removeEventListener('abort', this.onCallerAbort);
  }
}
