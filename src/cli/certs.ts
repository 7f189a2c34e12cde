/** `kvstore certs`: writes development certificates (src/launcher/dev-certificates.ts) for a cluster. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { devHostsDefault, issueCertificate, type IssuedCertificate, writeDevCertificates } from '../launcher/dev-certificates.js';
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
        'With --add: only certificates for the nodes named, from the CA already in --out (a node to add later).',
      ].join('\n'),
    )
    .usage('--out <dir> --nodes <ids> [--hosts <names>] [--add | --force]')
    .option('--out <dir>', 'directory to write into (required)')
    .option('--nodes <ids>', 'node ids, comma-separated: n1,n2,n3 (required)')
    .option('--hosts <names>', 'more DNS names or IP addresses for every node certificate, comma-separated')
    .option('--add', 'issue certificates for these nodes from the CA already in --out, leaving everything else as it is')
    .option('--force', 'replace the CA already in --out (every certificate it signed stops being accepted)');
  return handle(command, (options: { out?: string; nodes?: string; hosts?: string; add?: boolean; force?: boolean }) => {
    requireOptions(command, 'out', 'nodes');
    return runCerts({ out: options.out!, nodes: options.nodes!, hosts: options.hosts ?? '', add: options.add === true, force: options.force === true });
  });
}

/** `kvstore certs ...`; resolves with the exit code. */
export async function runCerts(values: { out: string; nodes: string; hosts: string; add: boolean; force: boolean }): Promise<number> {
  const ids = values.nodes.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = ids.find((id) => !nodeIdPattern.test(id));
  if (ids.length === 0) throw new UsageError('--nodes names no node');
  if (bad !== undefined) throw new UsageError(`"${bad}" is not a node id (1-64 of A-Za-z0-9._-)`);
  if (new Set(ids).size !== ids.length) throw new UsageError('--nodes has a duplicate id');
  const out = resolve(values.out);
  if (values.add && values.force) throw new UsageError('--add keeps the CA in --out and --force replaces it: pass one of them');
  const hosts = values.hosts.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (values.add) return addNodeCertificates(out, ids, hosts);
  if (existsSync(join(out, 'ca.key')) && !values.force) {
    process.stderr.write(`kvstore certs: ${out} already holds a CA (ca.key); pass --force to replace it (every certificate signed by it stops being accepted)\n`);
    return 2;
  }
  try {
    const certs = writeDevCertificates(out, ids, hosts);
    process.stdout.write(
      [
        `wrote to ${out}:`,
        `  ${certs.ca.certFile}  (CA: tls.clientCaFile, peerTls.caFile, kvctl --cacert)`,
        ...[...certs.nodes].map(([id, c]) => nodeLine(id, c)),
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

function nodeLine(id: string, c: IssuedCertificate): string {
  return `  ${c.certFile}, ${c.keyFile}  (node ${id}: tls and peerTls certFile/keyFile)`;
}

/** `certs --add`: node certificates from the CA in `out`, never overwriting a file. */
function addNodeCertificates(out: string, ids: readonly string[], extraHosts: readonly string[]): number {
  const ca = { certFile: join(out, 'ca.crt'), keyFile: join(out, 'ca.key') };
  if (!existsSync(ca.keyFile) || !existsSync(ca.certFile)) {
    process.stderr.write(`kvstore certs: --add issues from the CA in ${out}, and there is none (ca.crt and ca.key); run it without --add first\n`);
    return 2;
  }
  const taken = ids.filter((id) => existsSync(join(out, `${id}.crt`)) || existsSync(join(out, `${id}.key`)));
  if (taken.length > 0) {
    process.stderr.write(`kvstore certs: ${out} already holds a certificate or key for ${taken.join(', ')}; --add never overwrites one (remove it first to issue it again)\n`);
    return 2;
  }
  const hosts = [...new Set([...devHostsDefault, ...extraHosts])];
  try {
    const lines = ids.map((id) => nodeLine(id, issueCertificate(ca, out, { name: id, commonName: id, nodeIds: [id], hosts, usage: 'node' })));
    process.stdout.write([`wrote to ${out}, signed by ${ca.certFile}:`, ...lines, ''].join('\n'));
    return 0;
  } catch (err) {
    process.stderr.write(`kvstore certs: ${(err as Error).message}\n`);
    return 1;
  }
}
