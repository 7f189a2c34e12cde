import type { Clock, TimerHandle } from '../platform/clock.js';

/**
 * Simulated time for the whole simulated cluster: one queue of events ordered by (time, order of
 * scheduling). `run` takes the next event, moves time to it, runs it, and then lets every
 * promise continuation it caused run (one real setImmediate: the microtask queue drains fully
 * first) before the next event. Nothing else moves time, so a run is a function of its seed.
 *
 * What must hold for that: no real timer, real I/O or unseeded randomness reaches the code under
 * simulation. The code under simulation takes a Clock (src/platform/clock.ts); storage commits
 * on this thread (Repository `simulated`); the network is in memory (sim-network.ts).
 */
export class SimScheduler {
  private nowMs = 0;
  private sequence = 0;
  /** A binary heap of pending events. */
  private readonly heap: SimEvent[] = [];
  /** Events run since the start, for the throughput report. */
  eventsRun = 0;
  /** A run loop is active: code inside an event must not start another (see settleOn). */
  private looping = false;

  get now(): number {
    return this.nowMs;
  }

  /** Runs `fn` at simulated time `atMs` (not before now); returns a handle to cancel it. */
  at(atMs: number, fn: () => void): TimerHandle {
    const event: SimEvent = { atMs: Math.max(atMs, this.nowMs), seq: this.sequence++, fn, cancelled: false };
    this.push(event);
    return { cancel: () => (event.cancelled = true) };
  }

  /** Runs events until simulated time passes `untilMs` or nothing is left; resolves at that time. */
  async runUntil(untilMs: number): Promise<void> {
    this.looping = true;
    try {
      await this.loopUntil(untilMs);
    } finally {
      this.looping = false;
    }
  }

  /**
   * Waits for `promise`: from outside the run loop by running events until it settles (or
   * `limitMs` of simulated time pass), from inside an event by simply awaiting it (the loop that
   * is running drives it).
   */
  async settleOn(promise: Promise<unknown>, limitMs: number): Promise<void> {
    if (this.looping) await promise;
    else await this.runWhile(promise, this.nowMs + limitMs);
  }

  /** Runs the next event due by `untilMs` and what it set off; false when there is none. */
  private async step(untilMs: number): Promise<boolean> {
    const next = this.peek();
    if (next === undefined || next.atMs > untilMs) return false;
    this.pop();
    if (next.cancelled) return true;
    this.nowMs = next.atMs;
    this.eventsRun++;
    next.fn();
    await settle();
    return true;
  }

  private async loopUntil(untilMs: number): Promise<void> {
    while (await this.step(untilMs));
    this.nowMs = Math.max(this.nowMs, untilMs);
    await settle();
  }

  /** Runs events until `done` resolves (checked after every event) or time passes `untilMs`. */
  async runWhile(done: Promise<unknown>, untilMs: number): Promise<boolean> {
    this.looping = true;
    try {
      return await this.loopWhile(done, untilMs);
    } finally {
      this.looping = false;
    }
  }

  private async loopWhile(done: Promise<unknown>, untilMs: number): Promise<boolean> {
    let finished = false;
    void done.then(
      () => (finished = true),
      () => (finished = true),
    );
    await settle();
    while (!finished && (await this.step(untilMs)));
    return finished;
  }

  private peek(): SimEvent | undefined {
    return this.heap[0];
  }

  private push(event: SimEvent): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
      if (m === i) break;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  }
}

interface SimEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** Lets every continuation of the event just run finish: the microtask queue drains before an immediate. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** True wall time at simulated time 0: 2026-01-01T00:00:00Z (a fixed instant, so runs replay). */
export const simulatedEpochMs = Date.UTC(2026, 0, 1);

/**
 * One simulated node's clock. Monotonic time is the scheduler's; wall time adds the node's skew,
 * which faults change (a skewed or jumping clock). While the node is paused its timers wait and
 * fire on resume (late, like a SIGSTOPped process's); once it has crashed they never fire.
 */
export class SimClock implements Clock {
  /** Milliseconds this node's wall clock is ahead of true time (negative: behind). */
  skewMs = 0;
  private paused = false;
  private dead = false;
  private held: (() => void)[] = [];

  constructor(private readonly scheduler: SimScheduler) {}

  wallMs(): number {
    return Math.round(simulatedEpochMs + this.scheduler.now + this.skewMs);
  }

  monotonicMs(): number {
    return this.scheduler.now;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    let cancelled = false;
    const handle = this.scheduler.at(this.scheduler.now + Math.max(0, ms), () => this.fire(() => !cancelled && fn()));
    return {
      cancel: () => {
        cancelled = true;
        handle.cancel();
      },
    };
  }

  defer(fn: () => void): void {
    this.scheduler.at(this.scheduler.now, () => this.fire(fn));
  }

  timeoutSignal(ms: number): AbortSignal {
    const controller = new AbortController();
    this.setTimer(() => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), ms);
    return controller.signal;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get isDead(): boolean {
    return this.dead;
  }

  pause(): void {
    this.paused = true;
  }

  /** Resumes: what fell due meanwhile runs now, in order. */
  resume(): void {
    this.paused = false;
    const held = this.held;
    this.held = [];
    for (const fn of held) this.scheduler.at(this.scheduler.now, () => this.fire(fn));
  }

  /** The process is gone: nothing scheduled on this clock runs again. */
  kill(): void {
    this.dead = true;
    this.held = [];
  }

  private fire(fn: () => void): void {
    if (this.dead) return;
    if (this.paused) this.held.push(fn);
    else fn();
  }
}
