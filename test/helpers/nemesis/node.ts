import { createNodeConfig, NodeChild } from '../../../src/launcher/node-launcher.js';

/** How long a node may take to print its listening line (a restart after SIGKILL included). */
const startDeadlineMs = 20_000;
/** Output lines kept per stream for failure reports (older ones are dropped). */
const outputLinesMax = 400;

/** Why a node process ended, when nobody asked it to. */
export interface UnexpectedExit {
  readonly node: string;
  readonly pid: number | undefined;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Milliseconds since the run began. */
  readonly atMs: number;
  /** 'running': it exited while serving; 'starting': it exited before printing its listening line. */
  readonly phase: 'running' | 'starting';
  readonly stderrTail: string[];
  readonly stdoutTail: string[];
}

/** A log line at error level or above (pino level >= 50): every one of them names a bug. */
export interface ErrorLog {
  readonly node: string;
  readonly pid: number | undefined;
  readonly atMs: number;
  readonly level: number;
  readonly msg: string;
  readonly line: string;
}

/** pino's error level. */
const errorLevel = 50;

/**
 * A kvstore node process for the nemesis: started through the launcher
 * (src/launcher/node-launcher.ts, like test/helpers/node-process.ts), plus what the nemesis needs
 * on top:
 *
 * - extra environment per start (the test hooks, e.g. KVSTORE_TEST_CLOCK_OFFSET_MS), so a node can
 *   be restarted with a skewed clock and later without;
 * - every exit classified as asked for (kill/stop by the harness) or not, and the unasked ones
 *   reported to `onUnexpectedExit` with the code, the signal and the last lines of output;
 * - every log line at error level or above reported to `onErrorLog` (an unhandled rejection,
 *   an unexpected error answered as INTERNAL, two records with one version, ...).
 */
export class NemesisNode {
  private child: NodeChild | undefined;
  /** Set just before the harness signals the process to end (SIGKILL, SIGTERM). */
  private exitRequested = false;
  private stderrLines: string[] = [];
  private stdoutLines: string[] = [];
  listen = '';
  peerListen = '';
  /** The environment overrides of the current (or last) start. */
  env: Record<string, string> = {};
  /** How many times the process was started. */
  starts = 0;

  constructor(
    readonly id: string,
    readonly configPath: string,
    readonly dataDir: string,
    private readonly clock: () => number,
    private readonly onUnexpectedExit: (exit: UnexpectedExit) => void,
    private readonly onErrorLog: (log: ErrorLog) => void,
  ) {}

  /** Writes node `id`'s config in `dir` (data in dir/<id>). */
  static create(
    dir: string,
    id: string,
    config: Record<string, unknown>,
    clock: () => number,
    onUnexpectedExit: (exit: UnexpectedExit) => void,
    onErrorLog: (log: ErrorLog) => void,
  ): NemesisNode {
    const written = createNodeConfig(dir, id, config);
    return new NemesisNode(id, written.path, written.config.dataDir as string, clock, onUnexpectedExit, onErrorLog);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child?.running ?? false;
  }

  /** Whether the process is stopped by SIGSTOP right now. */
  get paused(): boolean {
    return this.child?.paused ?? false;
  }

  /** Starts the process with `env` over this process's environment; resolves once it listens. */
  async start(env: Record<string, string> = {}): Promise<void> {
    if (this.running) throw new Error(`${this.id} is already running`);
    this.env = env;
    this.exitRequested = false;
    this.starts++;
    const keep = (lines: string[], line: string) => {
      lines.push(line);
      if (lines.length > outputLinesMax) lines.splice(0, lines.length - outputLinesMax / 2);
    };
    const child: NodeChild = NodeChild.spawn(this.configPath, {
      id: this.id,
      env,
      startDeadlineMs,
      onLine: (line, stream) => {
        const tagged = `[${this.id} pid ${child.pid}] ${line}`;
        if (stream === 'stderr') return keep(this.stderrLines, tagged);
        keep(this.stdoutLines, tagged);
        if (line.includes('"level":5') || line.includes('"level":6')) this.reportErrorLog(child, line);
      },
    });
    this.child = child;
    void child.exit.then(({ code, signal }) => {
      if (this.exitRequested) return;
      this.onUnexpectedExit({
        node: this.id,
        pid: child.pid,
        code,
        signal,
        atMs: this.clock(),
        phase: child.addresses === undefined ? 'starting' : 'running',
        stderrTail: this.stderrLines.slice(-30),
        stdoutTail: this.stdoutLines.slice(-30),
      });
    });
    try {
      const addresses = await child.ready;
      this.listen = addresses.listen;
      this.peerListen = addresses.peerListen;
    } catch (err) {
      // A start that hangs is a failure of that start: the launcher kills it (counted as asked for).
      if (child.running) this.exitRequested = true;
      throw err;
    }
  }

  private reportErrorLog(child: NodeChild, line: string): void {
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string };
      if (typeof entry.level === 'number' && entry.level >= errorLevel) {
        this.onErrorLog({ node: this.id, pid: child.pid, atMs: this.clock(), level: entry.level, msg: String(entry.msg ?? ''), line });
      }
    } catch {
      // not a log line
    }
  }

  /** Crash: SIGKILL (a paused process dies too). Resolves once it exited. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.exitRequested = true;
    await this.child!.kill();
  }

  /** Graceful stop (SIGCONT if paused, then SIGTERM); resolves with the exit code (killed after a deadline). */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; forced: boolean }> {
    const child = this.child;
    if (child === undefined) return { code: null, signal: null, forced: false };
    if (this.running) this.exitRequested = true;
    return child.stop();
  }

  pause(): void {
    this.child?.pause();
  }

  resume(): void {
    this.child?.resume();
  }

  /** Resolves when the current process has exited. */
  async exited(): Promise<void> {
    await this.child?.exit;
  }

  /** The last lines of output, for reports. */
  output(lines = 40): string {
    return [`--- ${this.id} stderr (last lines) ---`, ...this.stderrLines.slice(-lines), `--- ${this.id} stdout (last lines) ---`, ...this.stdoutLines.slice(-lines)].join('\n');
  }
}
