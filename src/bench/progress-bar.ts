/**
 * The live progress line on stderr. On a terminal it redraws one line in place (`\r`, then
 * "erase to end of line"); otherwise (a log file, CI) it prints a full line every
 * `nonTtyIntervalMs` so that logs stay readable.
 */

/** How often a non-terminal gets a progress line. */
export const nonTtyIntervalMsDefault = 2000;
/** Characters of the bar itself. */
export const barWidthDefault = 24;
const eraseToEndOfLine = '\x1b[K';

export interface ProgressOutput {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export class ProgressBar {
  private lastPrintMs = Number.NEGATIVE_INFINITY;
  private drawn = false;

  constructor(
    private readonly out: ProgressOutput,
    private readonly nonTtyIntervalMs = nonTtyIntervalMsDefault,
    private readonly now: () => number = Date.now,
  ) {}

  get isTTY(): boolean {
    return this.out.isTTY === true;
  }

  /** Shows `line` (a terminal at once; otherwise at most every nonTtyIntervalMs, or if `force`). */
  update(line: string, force = false): void {
    if (this.isTTY) {
      this.out.write(`\r${line}${eraseToEndOfLine}`);
      this.drawn = true;
      return;
    }
    const now = this.now();
    if (!force && now - this.lastPrintMs < this.nonTtyIntervalMs) return;
    this.lastPrintMs = now;
    this.out.write(`${line}\n`);
  }

  /** Ends the progress display: a terminal gets `line` (if any) and a newline. */
  done(line?: string): void {
    if (this.isTTY) {
      if (line !== undefined) this.out.write(`\r${line}${eraseToEndOfLine}\n`);
      else if (this.drawn) this.out.write('\n');
    } else if (line !== undefined) {
      this.out.write(`${line}\n`);
    }
    this.drawn = false;
    this.lastPrintMs = Number.NEGATIVE_INFINITY;
  }
}

/** `[#########...............]` for a fraction in [0, 1]. */
export function renderBar(fraction: number, width = barWidthDefault): string {
  const clamped = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(clamped * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/** 12345.6 -> "12,346". */
export function formatCount(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/** Seconds as "4.2s" or "3m05s". */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(1)}s`;
  const minutes = Math.floor(s / 60);
  return `${minutes}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
}

export interface ProgressState {
  /** e.g. "warmup", "run", "preload". */
  phase: string;
  /** 0..1 or undefined when unknown. */
  fraction: number | undefined;
  elapsedSeconds: number;
  /** undefined when unknown (an --ops run). */
  remainingSeconds: number | undefined;
  opsPerSecond: number;
  ops: number;
  errors: number;
  /** Extra text, e.g. "45,000/100,000 keys". */
  detail?: string;
}

/** One progress line, e.g. `run     [####....] 42%  4.2s elapsed, 5.8s left  12,345 ops/s  0 errors`. */
export function formatProgress(state: ProgressState): string {
  const bar = state.fraction === undefined ? '' : `${renderBar(state.fraction)} ${String(Math.floor(state.fraction * 100)).padStart(3)}%  `;
  const remaining = state.remainingSeconds === undefined ? '' : `, ${formatSeconds(state.remainingSeconds)} left`;
  const detail = state.detail === undefined ? '' : `  ${state.detail}`;
  return (
    `${state.phase.padEnd(7)} ${bar}${formatSeconds(state.elapsedSeconds)} elapsed${remaining}  ` +
    `${formatCount(state.opsPerSecond)} ops/s  ${formatCount(state.ops)} ops  ${formatCount(state.errors)} errors${detail}`
  );
}

/**
 * Current rate over a sliding window: feed it (time, cumulative count) samples; it answers the
 * rate between the newest sample and the oldest one still inside the window.
 */
export class RateMeter {
  private readonly samples: { atMs: number; count: number }[] = [];

  constructor(private readonly windowMs = 1000) {}

  add(atMs: number, count: number): void {
    this.samples.push({ atMs, count });
    while (this.samples.length > 2 && this.samples[1]!.atMs <= atMs - this.windowMs) this.samples.shift();
  }

  reset(): void {
    this.samples.length = 0;
  }

  /** Per second. */
  rate(): number {
    if (this.samples.length < 2) return 0;
    const first = this.samples[0]!;
    const last = this.samples[this.samples.length - 1]!;
    const spanMs = last.atMs - first.atMs;
    return spanMs <= 0 ? 0 : ((last.count - first.count) * 1000) / spanMs;
  }
}
