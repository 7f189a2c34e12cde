/**
 * A throwaway local cluster for `kvctl bench --local-cluster N` and the suite: N node processes
 * (src/launcher/local-cluster.ts) on free ports in a temp dir, stopped and removed afterwards.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeDevCertificates } from '../launcher/dev-certificates.js';
import { LocalCluster, localClusterMembers, peerPortOffset } from '../launcher/local-cluster.js';
import { benchTlsChannelOptions } from './driver.js';
import { KvClient } from '../client/index.js';
import { newToken, tokenDigest } from '../server/auth/users-file.js';

/** Base ports are drawn from [basePortMin, basePortMax) (below Linux's ephemeral range 32768+). */
const basePortMin = 20_000;
const basePortMax = 32_000;
/** Attempts to find a base port whose 2N ports are all free (and to start on it). */
const startAttemptsMax = 5;
const host = '127.0.0.1';
/** How long a fresh cluster may take until every node reaches every peer (probes run every second). */
const healthyTimeoutMs = 30_000;
const healthPollMs = 200;
/** Deadline of one Status call while polling. */
const statusDeadlineMs = 2000;

/**
 * Waits until every node answers Status and sees every peer reachable (and, with `drained`, has
 * no replication backlog). A fresh cluster's nodes start at the same time and only learn that
 * their peers are up from their first probe; a write at consistency ALL before that fails.
 * Answers false if that did not happen within `timeoutMs`.
 */
export async function waitUntilHealthy(endpoints: readonly string[], drained: boolean, timeoutMs = healthyTimeoutMs, token?: string, tlsCa?: string): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const clients = endpoints.map(
    (endpoint) => new KvClient({ endpoints: [endpoint], deadlineMs: statusDeadlineMs, ...(token === undefined ? {} : { token }), ...(tlsCa === undefined ? {} : { tls: { ca: tlsCa }, channelOptions: benchTlsChannelOptions }) }),
  );
  try {
    for (;;) {
      const statuses = await Promise.all(clients.map((client) => client.status().catch(() => undefined)));
      const healthy = statuses.every(
        (status) => status !== undefined && status.members.every((member) => member.self || (member.reachable && (!drained || member.backlogEntries === 0))),
      );
      if (healthy) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, healthPollMs));
    }
  } finally {
    for (const client of clients) client.close();
  }
}

export interface BenchCluster {
  readonly endpoints: string[];
  readonly pids: number[];
  readonly nodeIds: string[];
  readonly dir: string;
  readonly replicationFactor: number;
  /** With auth: the token of the cluster's one user (every permission, admin included). */
  readonly token: string | undefined;
  /** With TLS: the PEM of the CA that signed the nodes' certificates (clients trust it). */
  readonly tlsCa: string | undefined;
  /** Stops every node (SIGTERM, then SIGKILL after a grace period) and removes the temp dir. */
  stop(): Promise<void>;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

async function findBasePort(size: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = basePortMin + Math.floor(Math.random() * (basePortMax - basePortMin - peerPortOffset - size));
    const ports = Array.from({ length: size }, (_, i) => [base + i, base + peerPortOffset + i]).flat();
    const free = await Promise.all(ports.map(portFree));
    if (free.every(Boolean)) return base;
  }
  throw new Error(`no free block of ports for a ${size}-node local cluster between ${basePortMin} and ${basePortMax}`);
}

/**
 * The `extra` config of LocalCluster.generate. It spreads over each node's config, so a `cluster`
 * key replaces generate's own: with a replication factor it carries the same member list.
 */
function localClusterExtra(size: number, basePort: number, replicationFactor: number | undefined): Record<string, unknown> {
  return replicationFactor === undefined ? {} : { cluster: { members: localClusterMembers(size, basePort), replicationFactor } };
}

/**
 * With auth: writes a users file into `dir` with one user, `bench`, whose role may do everything,
 * and answers its token and the config that points the nodes at the file.
 */
function benchAuth(dir: string): { token: string; config: Record<string, unknown> } {
  const token = newToken();
  const usersFile = join(dir, 'users.yaml');
  writeFileSync(usersFile, `roles:\n  bench: { read: [""], write: [""], admin: true }\nusers:\n  bench: { roles: [bench], tokenSha256: ${tokenDigest(token).toString('hex')} }\n`);
  return { token, config: { auth: { usersFile } } };
}

/** With TLS: development certificates in `dir`, each node's tls and peerTls config, and the CA's PEM. */
function benchTls(dir: string, size: number): { ca: string; perNode: (id: string) => Record<string, unknown> } {
  const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
  const certs = writeDevCertificates(join(dir, 'certs'), ids);
  return {
    ca: readFileSync(certs.ca.certFile, 'utf8'),
    perNode: (id) => {
      const own = certs.nodes.get(id)!;
      return { tls: { certFile: own.certFile, keyFile: own.keyFile }, peerTls: { certFile: own.certFile, keyFile: own.keyFile, caFile: certs.ca.certFile } };
    },
  };
}

/**
 * Starts `size` local nodes in a fresh temp dir; retries on another port block if one is taken.
 * With `auth`, the nodes authenticate every call (benchAuth) and the cluster's `token` is the one to send.
 */
export async function startBenchCluster(size: number, replicationFactor?: number, auth = false, tls = false, cpuProfileDir?: string): Promise<BenchCluster> {
  // Each node writes its profile when it stops (SIGTERM: the cluster's stop).
  const nodeArgs = cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`];
  let lastError: unknown;
  for (let attempt = 0; attempt < startAttemptsMax; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-bench-'));
    try {
      const basePort = await findBasePort(size);
      const authSetup = auth ? benchAuth(dir) : undefined;
      const tlsSetup = tls ? benchTls(dir, size) : undefined;
      const cluster = await LocalCluster.generate(size, dir, basePort, { ...localClusterExtra(size, basePort, replicationFactor), ...authSetup?.config }, undefined, tlsSetup?.perNode, nodeArgs);
      if (!(await waitUntilHealthy(cluster.endpoints, false, healthyTimeoutMs, authSetup?.token, tlsSetup?.ca))) {
        await cluster.stop();
        throw new Error(`the local cluster's nodes did not all see each other within ${healthyTimeoutMs} ms`);
      }
      let stopping: Promise<void> | undefined;
      return {
        endpoints: cluster.endpoints,
        pids: cluster.nodes.map((node) => node.pid ?? 0).filter((pid) => pid > 0),
        nodeIds: cluster.nodes.map((node) => node.id),
        dir,
        replicationFactor: replicationFactor ?? Math.min(3, size),
        token: authSetup?.token,
        tlsCa: tlsSetup?.ca,
        stop() {
          stopping ??= cluster.stop().finally(() => rmSync(dir, { recursive: true, force: true }));
          return stopping;
        },
      };
    } catch (error) {
      lastError = error;
      rmSync(dir, { recursive: true, force: true });
      // A taken port shows as a node that exited before listening: try another block.
      if (!/EADDRINUSE|address already in use|before listening/i.test(error instanceof Error ? error.message : String(error))) break;
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}
