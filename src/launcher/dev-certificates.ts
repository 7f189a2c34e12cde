/**
 * Development certificates (`kvstore certs`, `npm run cluster -- --secure`, the benchmarks' and
 * tests' TLS clusters): a CA and certificates for a cluster, made with the system's
 * openssl (Node can verify X.509 but not issue it; openssl is on every Debian/Ubuntu image, and
 * a dependency for a dev-only command was not worth it).
 *
 * Each node's certificate serves both its ports: it names the node as the SAN URI
 * kvstore://node/<id> (the peer identity, tls-credentials.ts) plus DNS localhost and IP 127.0.0.1
 * and any --hosts (so clients' usual host name check passes on the public port), for server and
 * client use (a node is a client of its peers). The admin certificate has CN=admin (a client
 * certificate user name for auth).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { nodeIdentityUriPrefix } from '../server/tls-credentials.js';

/** Validity of development certificates: long enough never to expire under a developer. */
export const devCertificateDaysDefault = 825;
/** P-256 keys: small, fast handshakes, supported by every TLS client. */
const ecCurve = 'prime256v1';

export interface CertificateAuthority {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface IssuedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

function openssl(args: readonly string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('openssl not found: install it (Debian/Ubuntu: apt-get install openssl)');
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`);
  }
}

/** Writes a self-signed CA (`<name>.crt`, `<name>.key`) into `dir`. */
export function createCa(dir: string, name = 'ca', commonName = 'kvstore development CA', days = devCertificateDaysDefault): CertificateAuthority {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${ecCurve}`, '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', String(days), '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}

export interface CertificateRequest {
  /** File names `<name>.crt` and `<name>.key` in the directory. */
  readonly name: string;
  readonly commonName: string;
  /** kvstore node ids named as SAN URIs kvstore://node/<id> (a node certificate names exactly one). */
  readonly nodeIds?: readonly string[];
  /** DNS names and IP addresses as SANs (host name checks of clients). */
  readonly hosts?: readonly string[];
  /** Server and client use (a node), or client only (a user). */
  readonly usage: 'node' | 'client';
  readonly days?: number;
}

/** Issues a certificate signed by `ca` into `dir`. */
export function issueCertificate(ca: CertificateAuthority, dir: string, request: CertificateRequest): IssuedCertificate {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, `${request.name}.crt`);
  const keyFile = join(dir, `${request.name}.key`);
  const csrFile = join(dir, `${request.name}.csr`);
  const extFile = join(dir, `${request.name}.ext`);
  const sans = [
    ...(request.nodeIds ?? []).map((id) => `URI:${nodeIdentityUriPrefix}${id}`),
    ...(request.hosts ?? []).map((h) => (isIP(h) !== 0 ? `IP:${h}` : `DNS:${h}`)),
  ];
  writeFileSync(
    extFile,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${request.usage === 'node' ? 'serverAuth,clientAuth' : 'clientAuth'}`,
      ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  try {
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${ecCurve}`, '-nodes', '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${request.commonName}`]);
    chmodSync(keyFile, 0o600);
    openssl([
      'x509', '-req', '-in', csrFile, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-set_serial', `0x${randomBytes(16).toString('hex')}`,
      '-days', String(request.days ?? devCertificateDaysDefault), '-sha256', '-extfile', extFile, '-out', certFile,
    ]);
  } finally {
    rmSync(csrFile, { force: true });
    rmSync(extFile, { force: true });
  }
  return { certFile, keyFile };
}

export interface DevCertificates {
  readonly ca: CertificateAuthority;
  readonly nodes: ReadonlyMap<string, IssuedCertificate>;
  readonly admin: IssuedCertificate;
}

/** Host names every development node certificate carries (a local cluster). */
export const devHostsDefault: readonly string[] = ['localhost', '127.0.0.1', '::1'];

/** The CA, one certificate per node and the admin client certificate, in `outDir`. */
export function writeDevCertificates(outDir: string, nodeIds: readonly string[], extraHosts: readonly string[] = []): DevCertificates {
  const ca = createCa(outDir);
  const hosts = [...new Set([...devHostsDefault, ...extraHosts])];
  const nodes = new Map(nodeIds.map((id) => [id, issueCertificate(ca, outDir, { name: id, commonName: id, nodeIds: [id], hosts, usage: 'node' })] as const));
  const admin = issueCertificate(ca, outDir, { name: 'admin', commonName: 'admin', usage: 'client' });
  return { ca, nodes, admin };
}
