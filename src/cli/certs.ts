/** `kvstore certs`: writes development certificates (src/launcher/dev-certificates.ts) for a cluster. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeDevCertificates } from '../launcher/dev-certificates.js';
import { nodeIdentityUriPrefix } from '../server/tls-credentials.js';

const nodeIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const usage = `Usage: kvstore certs --out <dir> --nodes n1,n2,n3 [--hosts h1,h2] [--force]

Writes a development CA (ca.crt, ca.key), one certificate per node (<id>.crt, <id>.key: SAN URI
${nodeIdentityUriPrefix}<id>, DNS localhost, IP 127.0.0.1 and ::1, plus --hosts) for both ports, and an admin
client certificate (admin.crt, admin.key, CN=admin). Needs openssl. For development and tests:
production certificates come from your own CA, with the same identity field.`;

/** `kvstore certs ...`; resolves with the exit code. */
export async function runCerts(argv: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, options: { out: { type: 'string' }, nodes: { type: 'string' }, hosts: { type: 'string' }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    process.stderr.write(`kvstore certs: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const ids = (values.nodes ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = ids.find((id) => !nodeIdPattern.test(id));
  if (values.out === undefined || ids.length === 0 || bad !== undefined || new Set(ids).size !== ids.length) {
    const why = values.out === undefined ? '--out is required' : ids.length === 0 ? '--nodes is required' : bad !== undefined ? `"${bad}" is not a node id (1-64 of A-Za-z0-9._-)` : '--nodes has a duplicate id';
    process.stderr.write(`kvstore certs: ${why}\n${usage}\n`);
    return 2;
  }
  const out = resolve(values.out);
  if (existsSync(join(out, 'ca.key')) && values.force !== true) {
    process.stderr.write(`kvstore certs: ${out} already holds a CA (ca.key); pass --force to replace it (every certificate signed by it stops being accepted)\n`);
    return 2;
  }
  const hosts = (values.hosts ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
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
