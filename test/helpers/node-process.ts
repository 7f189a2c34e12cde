import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeConfig, NodeChild, writeNodeConfig } from '../../src/launcher/node-launcher.js';

/** How long a node may take to print its listening line. */
const startDeadlineMs = 20_000;
/** Output lines kept per stream (across restarts) before the older half is dropped. */
const outputLinesMax = 2000;

/** Makes a temp directory for a test; remove it with `removeTempDir`. */
export function makeTempDir(prefix = 'kvstore-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Every node child this test process started. A test that times out is abandoned by vitest
 * without reaching its `finally`, and its nodes would outlive the run: they are killed when the
 * test process exits.
 */
const started = new Set<NodeChild>();
function killStarted(): void {
  for (const child of started) {
    try {
      if (child.running && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}
process.on('exit', killStarted);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    killStarted();
    process.kill(process.pid, signal);
  });
}

function keep(lines: string[], line: string): void {
  lines.push(line);
  if (lines.length > outputLinesMax) lines.splice(0, outputLinesMax / 2);
}

/**
 * A real kvstore node in a child process, started through the launcher (src/launcher/node-launcher.ts)
 * on port 0: the bound addresses come from the node's listening log line, its output shows in
 * the error if it dies before that, and teardown stops it (SIGTERM, then SIGKILL). One object
 * stays the node across restarts: its output accumulates and `env` applies to every next start.
 */
export class NodeProcess {
  private child: NodeChild | undefined;
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
    const written = createNodeConfig(dir, id, config);
    return new NodeProcess(id, written.path, written.config);
  }

  get dataDir(): string {
    return this.config.dataDir as string;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child?.running ?? false;
  }

  /** Extra environment for the next starts (e.g. KVSTORE_TEST_CLOCK_OFFSET_MS); undefined values unset. */
  env: Record<string, string | undefined> = {};
  /** Node flags for the next starts (e.g. --cpu-prof). */
  nodeArgs: string[] = [];

  /** Rewrites the config (takes effect at the next start). */
  updateConfig(patch: Record<string, unknown>): void {
    this.config = { ...this.config, ...patch };
    writeNodeConfig(this.configPath, this.config);
  }

  async start(): Promise<this> {
    if (this.running) throw new Error(`${this.id} is already running`);
    const child = NodeChild.spawn(this.configPath, {
      id: this.id,
      env: this.env,
      nodeArgs: this.nodeArgs,
      startDeadlineMs,
      onLine: (line, stream) => keep(stream === 'stdout' ? this.stdoutLines : this.stderrLines, line),
    });
    this.child = child;
    started.add(child);
    void child.exit.then(() => started.delete(child));
    const addresses = await child.ready;
    this.listen = addresses.listen;
    this.peerListen = addresses.peerListen;
    this.metricsListen = addresses.metricsListen;
    return this;
  }

  /** Graceful stop (SIGTERM); resolves with the exit code. Kills after a deadline. */
  async stop(): Promise<number | null> {
    return (await this.child?.stop())?.code ?? null;
  }

  /** Crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    await this.child?.kill();
  }

  pause(): void {
    this.child?.pause();
  }

  resume(): void {
    this.child?.resume();
  }

  /** Resolves with the exit code when the process exits. */
  async exited(): Promise<number | null> {
    return (await this.child?.exit)?.code ?? null;
  }

  output(): string {
    return [`--- ${this.id} stderr ---`, ...this.stderrLines.slice(-50), `--- ${this.id} stdout (last lines) ---`, ...this.stdoutLines.slice(-20)].join('\n');
  }
}
