import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { expect } from 'vitest';
import { KVStoreDefinition, type KVStoreClient } from '../../gen/kvstore/v1/kvstore.js';
import { KvClient, KvError, Status, type KvClientOptions } from '../../src/client/index.js';
import { kvstoreBin } from '../../src/launcher/node-launcher.js';
import { makeTempDir, NodeProcess, removeTempDir } from './node-process.js';

/**
 * Helpers for the single-node integration tests (test/integration): one real node process in a
 * temp dir, its SDK client, a raw nice-grpc client for requests the SDK refuses to build, a
 * runner for one-shot `kvstore` CLI invocations, and a seeded RNG for the fault tests.
 */

/** Longest a one-shot CLI invocation (bad config, restore, refused start) may run. */
export const cliDeadlineMsDefault = 20_000;

/** One real node process in its own temp dir, with clients that are closed by `close()`. */
export class SingleNode {
  readonly node: NodeProcess;
  private clients: KvClient[] = [];
  private channels: Channel[] = [];

  private constructor(
    readonly dir: string,
    id: string,
    config: Record<string, unknown>,
  ) {
    this.node = NodeProcess.create(dir, id, config);
  }

  /** Starts node `id` (config merged over the helper's defaults) in a fresh temp dir, with `env` (test hooks) over this process's environment. */
  static async start(id = 'solo', config: Record<string, unknown> = {}, dir = makeTempDir(`kvstore-${id}-`), env: Record<string, string | undefined> = {}): Promise<SingleNode> {
    const single = new SingleNode(dir, id, config);
    single.node.env = env;
    try {
      await single.node.start();
    } catch (err) {
      await single.close();
      throw err;
    }
    return single;
  }

  /** A new SDK client of the node's current address (the port changes at every restart). */
  client(options: Omit<KvClientOptions, 'endpoints'> = {}): KvClient {
    const client = KvClient.connect(this.node.listen, { deadlineMs: 10_000, ...options });
    this.clients.push(client);
    return client;
  }

  /** A raw generated client, for requests the SDK would refuse to send. */
  raw(): KVStoreClient {
    const channel = createChannel(this.node.listen);
    this.channels.push(channel);
    return createClient(KVStoreDefinition, channel);
  }

  /** Closes the clients made so far (they point at the old port after a restart). */
  closeClients(): void {
    for (const client of this.clients) client.close();
    for (const channel of this.channels) channel.close();
    this.clients = [];
    this.channels = [];
  }

  /** Stops the node (SIGTERM, SIGKILL after the helper's deadline), closes clients, removes the dir. */
  async close(): Promise<void> {
    this.closeClients();
    try {
      await this.node.stop();
    } finally {
      removeTempDir(this.dir);
    }
  }
}

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True if the process had to be killed at the deadline (it should have exited by itself). */
  readonly timedOut: boolean;
}

/** The built programs of dist/src/cli, by file name. */
export const cliBin = (name: 'kvstore' | 'kvctl' | 'local-cluster'): string => join(dirname(kvstoreBin), `${name}.js`);

/**
 * Runs `node dist/src/cli/kvstore.js ...args` to completion and captures its output. A process
 * still running at the deadline (e.g. a node that started when it should have been refused) is
 * killed, and the result says so.
 */
export function runKvstore(args: readonly string[], deadlineMs = cliDeadlineMsDefault): Promise<CliResult> {
  return runCli(kvstoreBin, args, deadlineMs);
}

/** Runs `node <script> ...args` as runKvstore does (stdin empty; killed at the deadline). */
export function runCli(script: string, args: readonly string[], deadlineMs = cliDeadlineMsDefault, env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, deadlineMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** Describes a CLI result for assertion messages. */
export function describeCli(result: CliResult): string {
  return `exit ${result.code} (signal ${result.signal}, timed out ${result.timedOut})\n--- stderr ---\n${result.stderr}\n--- stdout ---\n${result.stdout.slice(-2000)}`;
}

/** Awaits `promise`, which must reject with a KvError, and returns that error. */
export async function kvErrorOf(promise: Promise<unknown>): Promise<KvError> {
  try {
    await promise;
  } catch (err) {
    if (KvError.isKvError(err)) return err;
    throw new Error(`expected a KvError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** Awaits a raw nice-grpc call, which must fail, and returns its status code and details. */
export async function grpcErrorOf(promise: Promise<unknown>): Promise<{ code: Status; details: string }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { code?: unknown; details?: unknown; name?: unknown };
    if (typeof e.code === 'number' && typeof e.details === 'string') return { code: e.code as Status, details: e.details };
    throw new Error(`expected a gRPC ClientError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** Asserts a KvError's code, with the error's message in the failure output. */
export function expectCode(error: { code: Status; message?: string; details?: string }, ...codes: Status[]): void {
  expect(codes.map((c) => Status[c]), `error ${error.message ?? error.details}`).toContain(Status[error.code]);
}

/** Drains an async iterable of keys. */
export async function collectKeys(keys: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const key of keys) out.push(key);
  return out;
}

/** Runs `fn` over `items` with at most `chunk` calls in flight (chunk by chunk). */
export async function inChunks<T>(items: readonly T[], chunk: number, fn: (item: T, index: number) => Promise<unknown>): Promise<void> {
  for (let start = 0; start < items.length; start += chunk) {
    await Promise.all(items.slice(start, start + chunk).map((item, i) => fn(item, start + i)));
  }
}

/** Byte order, as the store sorts keys. */
export function byteOrder(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/** Hex strings of keys, so a mismatch prints readably. */
export function hexKeys(keys: readonly Uint8Array[]): string[] {
  return keys.map((k) => Buffer.from(k).toString('hex'));
}

/** A seed for a fault test: KVSTORE_TEST_SEED if set (to replay a failure), else a fresh one. */
export function testSeed(): number {
  const fromEnv = process.env.KVSTORE_TEST_SEED;
  if (fromEnv !== undefined && fromEnv !== '') return Number.parseInt(fromEnv, 10) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** mulberry32: a small deterministic PRNG; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max] from `random`. */
export function randomInt(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

export { makeTempDir, removeTempDir };
