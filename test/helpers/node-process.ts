import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';

const kvstoreBin = resolve('dist/src/cli/kvstore.js');
/** How long a node may take to print its listening line. */
const startDeadlineMs = 20_000;
/** How long a graceful stop may take before the helper kills the process. */
const stopDeadlineMs = 15_000;

/** Makes a temp directory for a test; remove it with `removeTempDir`. */
export function makeTempDir(prefix = 'kvstore-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * A real kvstore node in a child process (`node dist/src/cli/kvstore.js --config ...`), started
 * on port 0: the helper reads the bound addresses from the node's listening log line, shows its
 * stderr if it dies before that, and stops it (SIGTERM, then SIGKILL) in teardown.
 */
export class NodeProcess {
  private child: ChildProcess | undefined;
  private exitPromise: Promise<number | null> | undefined;
  readonly stderrLines: string[] = [];
  readonly stdoutLines: string[] = [];
  listen = '';
  /** The Prometheus endpoint's address, when the config sets metricsListen. */
  metricsListen = '';
  peerListen = '';

  constructor(
    readonly id: string,
    readonly configPath: string,
    private config: Record<string, unknown>,
  ) {}

  /** Writes a config for node `id` in `dir` (data in dir/<id>, ports 0 unless given). */
  static create(dir: string, id: string, config: Record<string, unknown> = {}): NodeProcess {
    const full = { nodeId: id, listen: '127.0.0.1:0', dataDir: join(dir, id), logLevel: 'info', ...config };
    const path = join(dir, `${id}.yaml`);
    writeFileSync(path, stringify(full));
    return new NodeProcess(id, path, full);
  }

  get dataDir(): string {
    return this.config.dataDir as string;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Extra environment for the next starts (e.g. KVSTORE_TEST_CLOCK_OFFSET_MS); undefined values unset. */
  env: Record<string, string | undefined> = {};

  /** Rewrites the config (takes effect at the next start). */
  updateConfig(patch: Record<string, unknown>): void {
    this.config = { ...this.config, ...patch };
    writeFileSync(this.configPath, stringify(this.config));
  }

  async start(): Promise<this> {
    if (this.running) throw new Error(`${this.id} is already running`);
    const child = spawn(process.execPath, [kvstoreBin, '--config', this.configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...this.env } });
    this.child = child;
    this.exitPromise = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    createInterface({ input: child.stderr! }).on('line', (line) => this.stderrLines.push(line));
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.id} did not start within ${startDeadlineMs} ms\n${this.output()}`)), startDeadlineMs);
      lines.on('line', (line) => {
        this.stdoutLines.push(line);
        if (this.stdoutLines.length > 2000) this.stdoutLines.splice(0, 1000);
        try {
          const entry = JSON.parse(line) as { listen?: string; peerListen?: string; metricsListen?: string; msg?: string };
          if (entry.listen !== undefined && entry.msg?.includes('listening')) {
            this.listen = entry.listen;
            this.peerListen = entry.peerListen ?? '';
            this.metricsListen = entry.metricsListen ?? '';
            clearTimeout(timer);
            resolve();
          }
        } catch {
          // not a log line
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.id} exited (code ${code}, signal ${signal}) before listening\n${this.output()}`));
      });
    });
    return this;
  }

  /** Graceful stop (SIGTERM); resolves with the exit code. Kills after a deadline. */
  async stop(): Promise<number | null> {
    if (!this.running) return this.child?.exitCode ?? null;
    this.child!.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), stopDeadlineMs);
    const code = await this.exitPromise!;
    clearTimeout(timer);
    return code;
  }

  /** Crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGKILL');
    await this.exitPromise;
  }

  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Resolves with the exit code when the process exits. */
  exited(): Promise<number | null> {
    return this.exitPromise ?? Promise.resolve(null);
  }

  output(): string {
    return [`--- ${this.id} stderr ---`, ...this.stderrLines.slice(-50), `--- ${this.id} stdout (last lines) ---`, ...this.stdoutLines.slice(-20)].join('\n');
  }
}
