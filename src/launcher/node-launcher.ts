/**
 * The one way to run a kvstore node as a child process, shared by `npm run cluster`, the
 * benchmarks' throwaway clusters and the tests: write the node's YAML config, spawn
 * `node dist/src/cli/kvstore.js --config <file>`, read the bound addresses from its "listening"
 * log line, and end it by its handle only (SIGTERM, then SIGKILL after a grace; SIGKILL, SIGSTOP
 * and SIGCONT for fault tests). Imports nothing of the node itself: it talks to the binary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

/**
 * The node program: dist/src/cli/kvstore.js beside this module once built, or under dist/ when
 * this module runs from its TypeScript source (vitest, tsx), which the tests build first.
 */
export const kvstoreBin = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../dist/src/cli/kvstore.js' : '../cli/kvstore.js', import.meta.url));
/** How long a node may take to print its listening line (LMDB open and tree rebuild included). */
export const startDeadlineMsDefault = 30_000;
/** How long a graceful stop may take before the node is killed (a node cuts in-flight calls off after 10 s itself). */
export const stopGraceMsDefault = 15_000;
/** Output lines of one start kept per stream for failure messages (older ones are dropped). */
const outputTailLinesMax = 50;

export type NodeConfig = Record<string, unknown>;

/**
 * Node `id`'s config with the defaults every launcher uses: public address 127.0.0.1 on port 0
 * (the bound port comes from the listening line), data in `dir/<id>`, and info logs (the
 * listening line is an info line). `config` spreads over them.
 */
export function nodeConfig(dir: string, id: string, config: NodeConfig = {}): NodeConfig {
  return { nodeId: id, listen: '127.0.0.1:0', dataDir: join(dir, id), logLevel: 'info', ...config };
}

/** Writes a node config as YAML (the node reads it at its next start). */
export function writeNodeConfig(path: string, config: NodeConfig): void {
  writeFileSync(path, stringify(config));
}

/** Writes `nodeConfig(dir, id, config)` to `dir/<id>.yaml`; answers the file and what it holds. */
export function createNodeConfig(dir: string, id: string, config: NodeConfig = {}): { path: string; config: NodeConfig } {
  const full = nodeConfig(dir, id, config);
  const path = join(dir, `${id}.yaml`);
  writeNodeConfig(path, full);
  return { path, config: full };
}

/** A node's name from its config file's: `dir/n1.yaml` is n1. */
export function configFileId(configPath: string): string {
  return basename(configPath).replace(/\.ya?ml$/, '');
}

/** What a node printed in its listening line ('' for a port it does not open). */
export interface ListeningAddresses {
  readonly listen: string;
  readonly peerListen: string;
  readonly metricsListen: string;
}

export interface NodeExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface LaunchOptions {
  /** The node's name in messages; by default the config file's name without `.yaml`. */
  readonly id?: string;
  /** Environment over this process's (e.g. the test hooks); an undefined value unsets a variable. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Node's own flags before the script (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
  readonly nodeArgs?: readonly string[];
  /**
   * Own process group: a terminal's Ctrl-C then reaches only the launching program, which stops
   * each node once with SIGTERM (a node treats a second signal as "exit now").
   */
  readonly detached?: boolean;
  readonly startDeadlineMs?: number;
  /** Every line the node writes, as it comes. */
  readonly onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** The listening line: a pino JSON line whose msg says "listening" and that names `listen`. */
function listeningAddresses(line: string): ListeningAddresses | undefined {
  if (!line.includes('listening')) return undefined;
  try {
    const entry = JSON.parse(line) as { listen?: string; peerListen?: string; metricsListen?: string; msg?: string };
    if (entry.listen === undefined || entry.msg?.includes('listening') !== true) return undefined;
    return { listen: entry.listen, peerListen: entry.peerListen ?? '', metricsListen: entry.metricsListen ?? '' };
  } catch {
    return undefined;
  }
}

function keepTail(lines: string[], line: string): void {
  lines.push(line);
  if (lines.length > outputTailLinesMax) lines.shift();
}

/**
 * One start of a node process. `ready` resolves with its addresses once it listens and rejects
 * if it exits first or does not listen within the start deadline (then it is killed, so a failed
 * start leaves no process behind). Signals go to this child only, never by name or group.
 */
export class NodeChild {
  /** Set once the node printed its listening line. */
  addresses: ListeningAddresses | undefined;
  /** Whether the process is stopped by SIGSTOP right now. */
  paused = false;
  readonly ready: Promise<ListeningAddresses>;
  /** Resolves when the process has exited. */
  readonly exit: Promise<NodeExit>;
  private readonly stdoutTail: string[] = [];
  private readonly stderrTail: string[] = [];

  private constructor(
    readonly id: string,
    readonly configPath: string,
    readonly child: ChildProcess,
    startDeadlineMs: number,
    onLine: LaunchOptions['onLine'],
  ) {
    this.exit = new Promise((resolveExit) => {
      child.once('exit', (code, signal) => resolveExit({ code, signal }));
      // A process that never came to be (no pid) has no exit event.
      child.once('error', () => {
        if (child.pid === undefined) resolveExit({ code: null, signal: null });
      });
    });
    this.ready = new Promise<ListeningAddresses>((resolveReady, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`node ${id} did not start within ${startDeadlineMs} ms\n${this.outputTail()}`));
      }, startDeadlineMs);
      createInterface({ input: child.stderr! }).on('line', (line) => {
        keepTail(this.stderrTail, line);
        onLine?.(line, 'stderr');
      });
      createInterface({ input: child.stdout! }).on('line', (line) => {
        keepTail(this.stdoutTail, line);
        onLine?.(line, 'stdout');
        if (this.addresses !== undefined) return;
        const addresses = listeningAddresses(line);
        if (addresses === undefined) return;
        this.addresses = addresses;
        clearTimeout(timer);
        resolveReady(addresses);
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`node ${id} could not be started: ${err.message}`));
      });
      child.once('exit', () => clearTimeout(timer));
      // 'close' comes after the output pipes are drained, so the message has the last lines.
      child.once('close', (code, signal) => reject(new Error(`node ${id} exited (code ${code}, signal ${signal}) before listening\n${this.outputTail()}`)));
    });
    // Whoever starts a node awaits `ready`; one that is stopped before it listens need not.
    this.ready.catch(() => undefined);
  }

  /** Spawns the node for `configPath`; await `ready` before talking to it. */
  static spawn(configPath: string, options: LaunchOptions = {}): NodeChild {
    const id = options.id ?? configFileId(configPath);
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), kvstoreBin, '--config', configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
      detached: options.detached ?? false,
    });
    return new NodeChild(id, configPath, child, options.startDeadlineMs ?? startDeadlineMsDefault, options.onLine);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Graceful stop: SIGCONT if paused, SIGTERM, and SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = stopGraceMsDefault): Promise<NodeExit & { forced: boolean }> {
    if (!this.running) return { ...(await this.exit), forced: false };
    this.resume();
    this.child.kill('SIGTERM');
    let forced = false;
    const timer = setTimeout(() => {
      forced = true;
      this.child.kill('SIGKILL');
    }, graceMs);
    const exit = await this.exit;
    clearTimeout(timer);
    return { ...exit, forced };
  }

  /** Crash: SIGKILL (a paused process dies too), no chance to clean up. Resolves once it exited. */
  async kill(): Promise<NodeExit> {
    if (this.running) this.child.kill('SIGKILL');
    this.paused = false;
    return this.exit;
  }

  /** SIGSTOP: the process stops answering without closing anything (a long GC pause, a frozen VM). */
  pause(): void {
    if (!this.running || this.paused) return;
    this.child.kill('SIGSTOP');
    this.paused = true;
  }

  /** SIGCONT after `pause`. */
  resume(): void {
    if (!this.running || !this.paused) return;
    this.child.kill('SIGCONT');
    this.paused = false;
  }

  /** The last lines this start wrote, for failure messages. */
  outputTail(): string {
    return [`--- ${this.id} stderr (last lines) ---`, ...this.stderrTail, `--- ${this.id} stdout (last lines) ---`, ...this.stdoutTail.slice(-20)].join('\n');
  }
}

/** Spawns a node and resolves once it listens (rejects, leaving no process, if it never does). */
export async function launchNode(configPath: string, options: LaunchOptions = {}): Promise<NodeChild> {
  const node = NodeChild.spawn(configPath, options);
  await node.ready;
  return node;
}

/**
 * Starts one node per config file at once and resolves once every one listens; if any fails,
 * stops the others and rejects with the first failure.
 */
export async function launchNodes(configPaths: readonly string[], options: (path: string) => LaunchOptions = () => ({})): Promise<NodeChild[]> {
  const nodes = configPaths.map((path) => NodeChild.spawn(path, options(path)));
  const settled = await Promise.allSettled(nodes.map((node) => node.ready));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed === undefined) return nodes;
  await Promise.all(nodes.map((node) => node.stop()));
  throw failed.reason;
}
