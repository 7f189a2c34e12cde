#!/usr/bin/env node
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { isEntryPoint } from './entry-point.js';
import { writeDevCertificates } from './certs.js';

const kvstoreBin = fileURLToPath(new URL('./kvstore.js', import.meta.url));
/** How long a local cluster waits for its nodes to print their listening lines. */
const startDeadlineMs = 30_000;

export interface LocalClusterNode {
  readonly id: string;
  readonly listen: string;
  readonly child: ChildProcess;
}

/** A throwaway cluster of local node processes (for `npm run cluster` and `kvctl bench --local-cluster`). */
export class LocalCluster {
  private constructor(readonly nodes: LocalClusterNode[]) {}

  get endpoints(): string[] {
    return this.nodes.map((n) => n.listen);
  }

  /**
   * Writes configs for `size` nodes into `dir` (public ports basePort+i, peer ports
   * basePort+100+i; port 0 for basePort 0 is not possible because members need fixed peer
   * addresses) and starts them. `extra` spreads over every node's config; `perNode` (e.g. each
   * node's own certificate files) over that.
   */
  static async generate(
    size: number,
    dir: string,
    basePort: number,
    extra: Record<string, unknown> = {},
    onLine?: (id: string, line: string) => void,
    perNode: (id: string) => Record<string, unknown> = () => ({}),
  ): Promise<LocalCluster> {
    mkdirSync(dir, { recursive: true });
    const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    const members = ids.map((id, i) => ({ id, peer: `127.0.0.1:${basePort + 100 + i}` }));
    const paths = ids.map((id, i) => {
      const path = join(dir, `${id}.yaml`);
      const config = { nodeId: id, listen: `127.0.0.1:${basePort + i}`, peerListen: `127.0.0.1:${basePort + 100 + i}`, dataDir: join(dir, id), logLevel: 'info', cluster: { members }, ...extra, ...perNode(id) };
      writeFileSync(path, stringify(config));
      return path;
    });
    return LocalCluster.launch(paths, onLine);
  }

  /** Starts one node per config file and waits until every one listens. */
  static async launch(configPaths: readonly string[], onLine?: (id: string, line: string) => void): Promise<LocalCluster> {
    const started = configPaths.map((path) => startNode(path, onLine));
    const settled = await Promise.allSettled(started.map((s) => s.ready));
    const failed = settled.find((s) => s.status === 'rejected');
    const cluster = new LocalCluster(started.map((s, i) => ({ id: s.id, child: s.child, listen: settled[i]!.status === 'fulfilled' ? (settled[i] as PromiseFulfilledResult<string>).value : '' })));
    if (failed !== undefined) {
      await cluster.stop();
      throw (failed as PromiseRejectedResult).reason;
    }
    return cluster;
  }

  /** Stops every node gracefully (SIGTERM) and waits for them to exit. */
  async stop(): Promise<void> {
    await Promise.all(
      this.nodes.map(
        (n) =>
          new Promise<void>((resolveExit) => {
            if (n.child.exitCode !== null || n.child.signalCode !== null) return resolveExit();
            n.child.once('exit', () => resolveExit());
            n.child.kill('SIGTERM');
          }),
      ),
    );
  }
}

function startNode(configPath: string, onLine?: (id: string, line: string) => void): { id: string; child: ChildProcess; ready: Promise<string> } {
  const id = configPath.replace(/^.*\//, '').replace(/\.ya?ml$/, '');
  // detached: own process group, so a terminal's Ctrl-C reaches only this launcher, which then
  // stops each node once with SIGTERM (a node treats a second signal as "exit now").
  const child = spawn(process.execPath, [kvstoreBin, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const ready = new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${id} did not start within ${startDeadlineMs} ms`)), startDeadlineMs);
    let buffered = '';
    const stderr: string[] = [];
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        onLine?.(id, line);
        try {
          const entry = JSON.parse(line) as { listen?: string; msg?: string };
          if (entry.listen !== undefined && entry.msg?.includes('listening')) {
            clearTimeout(timer);
            resolveReady(entry.listen);
          }
        } catch {
          // not JSON
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr.push(chunk.toString());
      onLine?.(id, chunk.toString().trimEnd());
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`node ${id} exited with code ${code} before listening: ${stderr.join('').trim()}`));
    });
  });
  return { id, child, ready };
}

/** Formats a node's pino JSON line for a person: `[n1] info  message {fields}`. */
function humanLine(id: string, line: string): string {
  try {
    const { level, msg, time, pid, hostname, node, ...rest } = JSON.parse(line) as Record<string, unknown>;
    void time;
    void pid;
    void hostname;
    void node;
    const names: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
    const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
    return `[${id}] ${(names[level as number] ?? String(level)).padEnd(5)} ${String(msg)}${extra}`;
  } catch {
    return `[${id}] ${line}`;
  }
}

/** Where `npm run cluster -- --secure` keeps the development certificates (examples/cluster/secure/*.yaml point here). */
export const secureClusterCertDir = '.cluster/certs';
const exampleIds = ['n1', 'n2', 'n3'];

async function main(): Promise<void> {
  const secure = process.argv.includes('--secure');
  const dirArg = process.argv.slice(2).find((a) => !a.startsWith('--'));
  const dir = resolve(dirArg ?? (secure ? 'examples/cluster/secure' : 'examples/cluster'));
  if (secure && !existsSync(join(secureClusterCertDir, 'ca.key'))) {
    // Certificates once, kept across runs (a new CA each run would make old client copies useless).
    writeDevCertificates(resolve(secureClusterCertDir), exampleIds);
    process.stdout.write(`wrote a development CA and certificates for ${exampleIds.join(', ')} and admin into ${secureClusterCertDir}/\n`);
  }
  const paths = exampleIds.map((id) => join(dir, `${id}.yaml`));
  const cluster = await LocalCluster.launch(paths, (id, line) => process.stdout.write(`${humanLine(id, line)}\n`));
  process.stdout.write(`\nlocal cluster up: ${cluster.endpoints.join(', ')}${secure ? ' (TLS with client certificates, mutual TLS between nodes, auth: the admin certificate is user admin in examples/cluster/secure/users.yaml)' : ''}\n`);
  if (secure) {
    // The node certificates name localhost (and 127.0.0.1); a host name avoids Node's warning about IP addresses as TLS server names.
    const endpoints = cluster.endpoints.map((e) => e.replace(/^127\.0\.0\.1:/, 'localhost:')).join(',');
    const c = secureClusterCertDir;
    process.stdout.write(
      `try: npm run kvctl -- --endpoints ${endpoints} --cacert ${c}/ca.crt --cert ${c}/admin.crt --key ${c}/admin.key status\n` +
        `  or: export KVSTORE_ENDPOINTS=${endpoints} KVSTORE_CACERT=${c}/ca.crt KVSTORE_CERT=${c}/admin.crt KVSTORE_KEY=${c}/admin.key; npm run kvctl -- status\n` +
        `  buf curl: npx buf curl --schema proto --protocol grpc --cacert ${c}/ca.crt --cert ${c}/admin.crt --key ${c}/admin.key -d '{"key":"aGVsbG8="}' https://${endpoints.split(',')[0]}/kvstore.v1.KVStore/Get\n` +
        'Ctrl-C stops every node.\n\n',
    );
  } else {
    process.stdout.write(`try: npm run kvctl -- --endpoints ${cluster.endpoints.join(',')} status\nCtrl-C stops every node.\n\n`);
  }
  await new Promise<void>((resolveStop) => {
    const stop = () => {
      process.stdout.write('\nstopping the local cluster...\n');
      cluster.stop().then(resolveStop, resolveStop);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

if (isEntryPoint(import.meta.url)) {
  main().catch((err: Error) => {
    process.stderr.write(`local cluster: ${err.message}\n`);
    process.exit(1);
  });
}
