#!/usr/bin/env node
/** `npm run cluster [-- --secure] [dir]`: the example cluster's three nodes (src/launcher/local-cluster.ts), logs made readable, Ctrl-C stops them. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { isEntryPoint } from '../common/entry-point.js';
import { writeDevCertificates } from '../launcher/dev-certificates.js';
import { LocalCluster } from '../launcher/local-cluster.js';
import { handle, newProgram, runProgram, type CliStreams } from './cli-program.js';

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

/** The `npm run cluster` program (dist/src/cli/local-cluster.js). */
export function localClusterProgram(streams: CliStreams = process): Command {
  const program = newProgram('local-cluster', streams)
    .description(
      [
        'npm run cluster -- [--secure] [dir]: starts the three nodes n1, n2, n3 of the example cluster',
        '(<dir>/n1.yaml ...), prints their logs made readable, and stops them on Ctrl-C.',
      ].join('\n'),
    )
    .argument('[dir]', 'directory of n1.yaml, n2.yaml, n3.yaml (default examples/cluster, with --secure examples/cluster/secure)')
    .option('--secure', `TLS, client certificates and auth (development certificates written once into ${secureClusterCertDir}/)`);
  return handle(program, async (dir: string | undefined, options: { secure?: boolean }) => {
    await runCluster(dir, options.secure === true);
    return 0;
  });
}

async function runCluster(dirArg: string | undefined, secure: boolean): Promise<void> {
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
  runProgram(localClusterProgram(), process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: Error) => {
      process.stderr.write(`local cluster: ${err.message}\n`);
      process.exit(1);
    },
  );
}
