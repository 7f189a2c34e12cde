/** `kvstore certs`: writes development certificates (src/launcher/dev-certificates.ts) for a cluster. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { writeDevCertificates } from '../launcher/dev-certificates.js';
import { nodeIdentityUriPrefix } from '../server/tls-credentials.js';
import { handle, requireOptions, UsageError } from './cli-program.js';

const nodeIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Adds `kvstore certs` to `parent`. */
export function addCertsCommand(parent: Command): Command {
  const command = parent
    .command('certs')
    .summary('write a development CA and node/admin certificates (openssl)')
    .description(
      [
        'Writes a development CA (ca.crt, ca.key), one certificate per node (<id>.crt, <id>.key: SAN URI',
        `${nodeIdentityUriPrefix}<id>, DNS localhost, IP 127.0.0.1 and ::1, plus --hosts) for both ports, and an admin`,
        'client certificate (admin.crt, admin.key, CN=admin). Needs openssl. For development and tests:',
        'production certificates come from your own CA, with the same identity field.',
      ].join('\n'),
    )
    .usage('--out <dir> --nodes <ids> [--hosts <names>] [--force]')
    .option('--out <dir>', 'directory to write into (required)')
    .option('--nodes <ids>', 'node ids, comma-separated: n1,n2,n3 (required)')
    .option('--hosts <names>', 'more DNS names or IP addresses for every node certificate, comma-separated')
    .option('--force', 'replace the CA already in --out (every certificate it signed stops being accepted)');
  return handle(command, (options: { out?: string; nodes?: string; hosts?: string; force?: boolean }) => {
    requireOptions(command, 'out', 'nodes');
    return runCerts({ out: options.out!, nodes: options.nodes!, hosts: options.hosts ?? '', force: options.force === true });
  });
}

/** `kvstore certs ...`; resolves with the exit code. */
export async function runCerts(values: { out: string; nodes: string; hosts: string; force: boolean }): Promise<number> {
  const ids = values.nodes.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = ids.find((id) => !nodeIdPattern.test(id));
  if (ids.length === 0) throw new UsageError('--nodes names no node');
  if (bad !== undefined) throw new UsageError(`"${bad}" is not a node id (1-64 of A-Za-z0-9._-)`);
  if (new Set(ids).size !== ids.length) throw new UsageError('--nodes has a duplicate id');
  const out = resolve(values.out);
  if (existsSync(join(out, 'ca.key')) && !values.force) {
    process.stderr.write(`kvstore certs: ${out} already holds a CA (ca.key); pass --force to replace it (every certificate signed by it stops being accepted)\n`);
    return 2;
  }
  const hosts = values.hosts.split(',').map((s) => s.trim()).filter((s) => s !== '');
  try {
    const certs = writeDevCertificates(out, ids, hosts);
    process.stdout.write(
      [
        `wrote to ${out}:`,
        `  ${certs.ca.certFile}  (CA: tls.clientCaFile, peerTls.caFile, kvctl --cacert)`,
        ...[...certs.nodes].map(([id, c]) => `  ${c.certFile}, ${c.keyFile}  (node ${id}: tls and peerTls certFile/keyFile)`),
        `  ${certs.admin.certFile}, ${certs.admin.keyFile}  (client CN=admin: kvctl --cert/--key)`,
        '',
      ].join('\n'),
    );
    return 0;
  } catch (err) {
    process.stderr.write(`kvstore certs: ${(err as Error).message}\n`);
    return 1;
  }
}
