import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';

const kvstoreBin = resolve('dist/src/cli/kvstore.js');
/** How long a node may take to print its listening line (a restart after SIGKILL included). */
const startDeadlineMs = 20_000;
/** How long a graceful stop may take before the launcher kills the process. */
const stopDeadlineMs = 15_000;
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
 * A kvstore node process for the nemesis: the same launch as test/helpers/node-process.ts
 * (`node dist/src/cli/kvstore.js --config <yaml>`, port 0, the bound addresses read from the
 * listening log line), plus what the nemesis needs on top:
 *
 * - extra environment per start (the test hooks, e.g. KVSTORE_TEST_CLOCK_OFFSET_MS), so a node can
 *   be restarted with a skewed clock and later without;
 * - every exit classified as asked for (kill/stop by the harness) or not, and the unasked ones
 *   reported to `onUnexpectedExit` with the code, the signal and the last lines of output;
 * - every log line at error level or above reported to `onErrorLog` (an unhandled rejection,
 *   an unexpected error answered as INTERNAL, two records with one version, ...).
 */
export class NemesisNode {
  private child: ChildProcess | undefined;
  private exitPromise: Promise<void> = Promise.resolve();
  /** Set just before the harness signals the process to end (SIGKILL, SIGTERM). */
  private exitRequested = false;
  private stderrLines: string[] = [];
  private stdoutLines: string[] = [];
  /** Whether the process is stopped by SIGSTOP right now. */
  paused = false;
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
    const dataDir = join(dir, id);
    const full = { nodeId: id, listen: '127.0.0.1:0', dataDir, logLevel: 'info', ...config };
    const path = join(dir, `${id}.yaml`);
    writeFileSync(path, stringify(full));
    return new NemesisNode(id, path, dataDir, clock, onUnexpectedExit, onErrorLog);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the process with `env` over this process's environment; resolves once it listens. */
  async start(env: Record<string, string> = {}): Promise<void> {
    if (this.running) throw new Error(`${this.id} is already running`);
    this.env = env;
    this.exitRequested = false;
    this.paused = false;
    this.starts++;
    const child = spawn(process.execPath, [kvstoreBin, '--config', this.configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.child = child;
    let listening = false;
    this.exitPromise = new Promise((done) => {
      child.on('exit', (code, signal) => {
        if (!this.exitRequested) {
          this.onUnexpectedExit({
            node: this.id,
            pid: child.pid,
            code,
            signal,
            atMs: this.clock(),
            phase: listening ? 'running' : 'starting',
            stderrTail: this.stderrLines.slice(-30),
            stdoutTail: this.stdoutLines.slice(-30),
          });
        }
        done();
      });
    });
    const keep = (lines: string[], line: string) => {
      lines.push(line);
      if (lines.length > outputLinesMax) lines.splice(0, lines.length - outputLinesMax / 2);
    };
    createInterface({ input: child.stderr! }).on('line', (line) => keep(this.stderrLines, `[${this.id} pid ${child.pid}] ${line}`));
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolveStart, reject) => {
      const timer = setTimeout(() => {
        // A start that hangs is a failure of that start: the process is ended (counted as asked for).
        this.exitRequested = true;
        child.kill('SIGKILL');
        reject(new Error(`${this.id} did not start within ${startDeadlineMs} ms\n${this.output()}`));
      }, startDeadlineMs);
      lines.on('line', (line) => {
        keep(this.stdoutLines, `[${this.id} pid ${child.pid}] ${line}`);
        if (line.includes('"level":5') || line.includes('"level":6')) {
          try {
            const entry = JSON.parse(line) as { level?: number; msg?: string };
            if (typeof entry.level === 'number' && entry.level >= errorLevel) {
              this.onErrorLog({ node: this.id, pid: child.pid, atMs: this.clock(), level: entry.level, msg: String(entry.msg ?? ''), line });
            }
          } catch {
            // not a log line
          }
        }
        if (listening) return;
        try {
          const entry = JSON.parse(line) as { listen?: string; peerListen?: string; msg?: string };
          if (entry.listen !== undefined && entry.msg?.includes('listening')) {
            this.listen = entry.listen;
            this.peerListen = entry.peerListen ?? '';
            listening = true;
            clearTimeout(timer);
            resolveStart();
          }
        } catch {
          // not a log line
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!listening) reject(new Error(`${this.id} exited (code ${code}, signal ${signal}) before listening\n${this.output()}`));
      });
    });
  }

  /** Crash: SIGKILL (a paused process dies too). Resolves once it exited. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.exitRequested = true;
    this.child!.kill('SIGKILL');
    this.paused = false;
    await this.exitPromise;
  }

  /** Graceful stop (SIGCONT if paused, then SIGTERM); resolves with the exit code (killed after a deadline). */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; forced: boolean }> {
    const child = this.child;
    if (child === undefined || !this.running) return { code: child?.exitCode ?? null, signal: child?.signalCode ?? null, forced: false };
    this.exitRequested = true;
    if (this.paused) this.resume();
    child.kill('SIGTERM');
    let forced = false;
    const timer = setTimeout(() => {
      forced = true;
      child.kill('SIGKILL');
    }, stopDeadlineMs);
    await this.exitPromise;
    clearTimeout(timer);
    return { code: child.exitCode, signal: child.signalCode, forced };
  }

  pause(): void {
    if (!this.running || this.paused) return;
    this.child!.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.running || !this.paused) return;
    this.child!.kill('SIGCONT');
    this.paused = false;
  }

  /** Resolves when the current process has exited. */
  exited(): Promise<void> {
    return this.exitPromise;
  }

  /** The last lines of output, for reports. */
  output(lines = 40): string {
    return [`--- ${this.id} stderr (last lines) ---`, ...this.stderrLines.slice(-lines), `--- ${this.id} stdout (last lines) ---`, ...this.stdoutLines.slice(-lines)].join('\n');
  }
}
