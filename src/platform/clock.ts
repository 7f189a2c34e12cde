/**
 * Time as the replication core sees it: the one seam between kvstore's protocol code and the
 * process's real clock and timers. Every module of replication, storage scheduling, tombstone GC,
 * the prober and anti-entropy takes a Clock instead of calling Date.now, setTimeout,
 * setImmediate or AbortSignal.timeout, so the deterministic simulator (src/sim/) can run the
 * same code on simulated time. `SystemClock` is the real one.
 */

/** A scheduled callback; cancelling one that already ran is a no-op. */
export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock time, Unix ms. May jump (NTP, a wrong clock): use for stamps and ages, never for durations. */
  wallMs(): number;
  /** Milliseconds on a clock that never jumps or goes back: use for durations and timeouts. */
  monotonicMs(): number;
  /** Runs `fn` once after `ms`. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  /** Runs `fn` after the work of the current turn (setImmediate on the system clock). */
  defer(fn: () => void): void;
  /** An AbortSignal that aborts with a TimeoutError after `ms` (AbortSignal.timeout on the system clock). */
  timeoutSignal(ms: number): AbortSignal;
}

/** Resolves after `ms` on `clock`, or rejects with the signal's reason once `signal` aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(signal!.reason);
    };
    const timer = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Resolves after the current turn's work on `clock`. */
export function nextTurn(clock: Clock): Promise<void> {
  return new Promise<void>((resolve) => clock.defer(resolve));
}

/** The process's clock, optionally shifted (the KVSTORE_TEST_CLOCK_OFFSET_MS hook): only wall time moves. */
export class SystemClock implements Clock {
  constructor(private readonly wallOffsetMs = 0) {}

  wallMs(): number {
    return Date.now() + this.wallOffsetMs;
  }

  monotonicMs(): number {
    return performance.now();
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  }

  defer(fn: () => void): void {
    setImmediate(fn);
  }

  timeoutSignal(ms: number): AbortSignal {
    return AbortSignal.timeout(ms);
  }
}

/** The process's unshifted clock, for code outside a node (tools, tests of single modules). */
export const systemClock: Clock = new SystemClock();
