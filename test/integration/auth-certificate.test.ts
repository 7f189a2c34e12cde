import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { ChannelCredentials, createChannel, createClient, Metadata } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KVStoreDefinition } from '../../gen/kvstore/v1/kvstore.js';
import { createCa, issueCertificate, type IssuedCertificate } from '../../src/launcher/dev-certificates.js';
import { KvClient, Status, type KvTlsOptions } from '../../src/client/index.js';
import { clientCertificateCnMetadataKey } from '../../src/server/auth/client-certificate.js';
import { newToken, tokenDigest } from '../../src/server/auth/users-file.js';
import { expectCode, grpcErrorOf, kvErrorOf, makeTempDir, SingleNode } from '../helpers/single-node.js';
import { removeTempDir } from '../helpers/node-process.js';

/**
 * Certificate authentication: with tls.clientCaFile and auth, a verified client certificate whose
 * subject CN is a user's name authenticates as that user (no token needed); a bearer token, when
 * sent, takes precedence. Certificates are made here by the project's `kvstore certs` code.
 */
describe('auth: client certificates name users by their subject CN', () => {
  const dir = makeTempDir('kvstore-auth-cert-');
  const ritaToken = newToken();
  const promToken = newToken();
  let single: SingleNode;
  let ca: string;
  const clients: KvClient[] = [];
  const certs: Record<string, IssuedCertificate> = {};

  const tlsOf = (name?: string): KvTlsOptions => ({ ca, ...(name === undefined ? {} : { cert: readFileSync(certs[name]!.certFile), key: readFileSync(certs[name]!.keyFile) }) });
  const client = (name: string, token?: string) => {
    const c = new KvClient({ endpoints: [single.node.listen], deadlineMs: 10_000, tls: tlsOf(name), ...(token === undefined ? {} : { token }) });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    const authority = createCa(dir);
    ca = readFileSync(authority.certFile, 'utf8');
    certs['node'] = issueCertificate(authority, dir, { name: 'solo', commonName: 'solo', nodeIds: ['solo'], hosts: ['127.0.0.1', 'localhost'], usage: 'node' });
    certs['ops'] = issueCertificate(authority, dir, { name: 'ops', commonName: 'ops', usage: 'client' });
    certs['nobody'] = issueCertificate(authority, dir, { name: 'nobody', commonName: 'nobody', usage: 'client' });
    const usersFile = join(dir, 'users.yaml');
    writeFileSync(
      usersFile,
      [
        'roles:',
        '  operator: { read: [""], write: [""], admin: true }',
        '  reader: { read: ["app/"] }',
        '  scraper: { metrics: true }',
        'users:',
        '  ops: { roles: [operator] }',
        `  rita: { roles: [reader], tokenSha256: ${tokenDigest(ritaToken).toString('hex')} }`,
        `  prom: { roles: [scraper], tokenSha256: ${tokenDigest(promToken).toString('hex')} }`,
        // A user named like the node: the node's own certificate must still not act as it.
        '  solo: { roles: [operator] }',
        '',
      ].join('\n'),
    );
    single = await SingleNode.start('solo', { tls: { certFile: certs['node'].certFile, keyFile: certs['node'].keyFile, clientCaFile: authority.certFile }, auth: { usersFile }, metricsListen: '127.0.0.1:0' }, dir);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await single?.close();
    removeTempDir(dir);
  });

  it('a certificate with CN=ops acts as user ops, without a token', async () => {
    const ops = client('ops');
    await ops.put('other/1', 'x');
    expect(await ops.getString('other/1')).toBe('x');
    const status = await ops.status();
    expect(status.redacted).toBe(false);
    expect(status.dataDir).toBe(single.node.dataDir);
  });

  it('a token sent with a certificate takes precedence over the certificate', async () => {
    const rita = client('ops', ritaToken);
    const denied = await kvErrorOf(rita.put('app/1', 'x'));
    expectCode(denied, Status.PERMISSION_DENIED);
    expect(denied.details).toMatch(/user "rita"/);
  });

  it('a certificate naming no user, or a node certificate, is UNAUTHENTICATED, and the CN metadata cannot be forged', async () => {
    const nobody = await kvErrorOf(client('nobody').get('app/1'));
    expectCode(nobody, Status.UNAUTHENTICATED);
    expect(nobody.details).toMatch(/CN "nobody" names no user/);
    expectCode(await kvErrorOf(client('node').get('app/1')), Status.UNAUTHENTICATED);
    const { cert, key } = { cert: readFileSync(certs['nobody']!.certFile), key: readFileSync(certs['nobody']!.keyFile) };
    const channel = createChannel(single.node.listen, ChannelCredentials.createSsl(Buffer.from(ca), key, cert));
    try {
      const raw = createClient(KVStoreDefinition, channel);
      const forged = await grpcErrorOf(raw.status({}, { metadata: Metadata({ [clientCertificateCnMetadataKey]: 'ops' }) }));
      expectCode(forged, Status.UNAUTHENTICATED);
    } finally {
      channel.close();
    }
  });

  it('/metrics speaks HTTPS with the public certificate and needs a token', async () => {
    const scrape = (token?: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const [host, port] = [single.node.metricsListen.slice(0, single.node.metricsListen.lastIndexOf(':')), Number(single.node.metricsListen.slice(single.node.metricsListen.lastIndexOf(':') + 1))];
        const req = httpsRequest({ host, port, path: '/metrics', ca, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    expect((await scrape()).status).toBe(401);
    expect((await scrape(ritaToken)).status).toBe(403);
    const ok = await scrape(promToken);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatch(/^kvstore_keys \d+$/m);
    // Plaintext HTTP gets no metrics from the TLS port.
    await expect(fetch(`http://${single.node.metricsListen}/metrics`)).rejects.toThrow();
  });
});
