import type { Clock, TimerHandle } from './clock.js';

/** The one start/stop shape of a node's background services (prober, anti-entropy, hint limits, tombstone GC, delivery loops). */
export interface BackgroundService {
  start(): void;
  /** Stops scheduling and resolves once the round in progress, if any, has finished. */
  stop(): Promise<void>;
}

/**
 * Runs `round` every `intervalMs` on `clock`, never two at once: the next round is scheduled
 * when the previous one ends (so a slow round delays the next instead of piling up). A round
 * that throws is reported to `onError` and the schedule goes on.
 */
export class PeriodicTask implements BackgroundService {
  private timer: TimerHandle | undefined;
  private current: Promise<void> | undefined;
  private stopped = false;
  private started = false;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly round: () => Promise<unknown> | unknown,
    private readonly onError: (error: unknown) => void,
    /** Run a first round right at start instead of after one interval. */
    private readonly runAtStart = false,
  ) {}

  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.runAtStart) this.runRound();
    else this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.current;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(() => this.runRound(), this.intervalMs);
  }

  private runRound(): void {
    if (this.stopped) return;
    this.current = (async () => {
      try {
        await this.round();
      } catch (error) {
        this.onError(error);
      }
    })().finally(() => {
      this.current = undefined;
      this.schedule();
    });
  }
}
