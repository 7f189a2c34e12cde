import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { ChannelCredentials, createChannel, createClient, type Channel } from 'nice-grpc';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PeerServiceDefinition, type PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';
import { createCa, issueCertificate, type CertificateAuthority, type IssuedCertificate } from '../../src/launcher/dev-certificates.js';
import { KvClient, Status, type KvTlsOptions } from '../../src/client/index.js';
import { versionWallMsMax } from '../../src/cluster/version.js';
import { encodeRecord } from '../../src/storage/record-codec.js';
import { TestCluster } from '../helpers/cluster.js';
import { makeTempDir, NodeProcess, removeTempDir } from '../helpers/node-process.js';
import { unusedPort } from '../helpers/tcp-proxy.js';
import { describeCli, runKvstore, SingleNode } from '../helpers/single-node.js';

import { stringify } from 'yaml';
import { waitFor } from '../helpers/wait.js';
import { kvctl } from '../helpers/probes.js';

/**
 * TLS on the public port and mutual TLS between nodes, with real node processes on ephemeral
 * ports and certificates made here with the project's own `kvstore certs` code (openssl).
 */

const localHosts = ['localhost', '127.0.0.1'];
let certDir: string;
let ca: CertificateAuthority;
/** Another CA: nothing it signed may be accepted. */
let otherCa: CertificateAuthority;
const nodeCerts = new Map<string, IssuedCertificate>();
/** A valid certificate (our CA) for n4, which is not a member. */
let nonMember: IssuedCertificate;
/** n2's identity signed by the other CA. */
let n2FromOtherCa: IssuedCertificate;
/** CN=admin, no node identity. */
let admin: IssuedCertificate;

beforeAll(() => {
  certDir = makeTempDir('kvstore-tls-certs-');
  ca = createCa(certDir, 'ca', 'test CA');
  otherCa = createCa(join(certDir, 'other'), 'ca', 'some other CA');
  for (const id of ['n1', 'n2', 'n3']) nodeCerts.set(id, issueCertificate(ca, certDir, { name: id, commonName: id, nodeIds: [id], hosts: localHosts, usage: 'node' }));
  nonMember = issueCertificate(ca, certDir, { name: 'n4', commonName: 'n4', nodeIds: ['n4'], hosts: localHosts, usage: 'node' });
  n2FromOtherCa = issueCertificate(otherCa, join(certDir, 'other'), { name: 'n2', commonName: 'n2', nodeIds: ['n2'], hosts: localHosts, usage: 'node' });
  admin = issueCertificate(ca, certDir, { name: 'admin', commonName: 'admin', usage: 'client' });
});
afterAll(() => removeTempDir(certDir));

const read = (path: string) => readFileSync(path);
const clientTls = (caFile: string, cert?: IssuedCertificate): KvTlsOptions => ({ ca: read(caFile), ...(cert === undefined ? {} : { cert: read(cert.certFile), key: read(cert.keyFile) }) });

/** Each node's config: its certificate on both ports, our CA for peers (and clients, if asked). */
function tlsConfig(id: string, clientCa = false): Record<string, unknown> {
  const own = nodeCerts.get(id)!;
  return {
    tls: { certFile: own.certFile, keyFile: own.keyFile, ...(clientCa ? { clientCaFile: ca.certFile } : {}) },
    peerTls: { certFile: own.certFile, keyFile: own.keyFile, caFile: ca.certFile },
  };
}

const channels: Channel[] = [];
const clients: KvClient[] = [];
afterEach(() => {
  for (const c of channels.splice(0)) c.close();
  for (const c of clients.splice(0)) c.close();
});

function kvClient(endpoint: string, tls?: KvTlsOptions): KvClient {
  const client = new KvClient({ endpoints: [endpoint], deadlineMs: 3_000, maxAttempts: 1, connectTimeoutMs: 2_000, ...(tls === undefined ? {} : { tls }) });
  clients.push(client);
  return client;
}

/** A raw peer-service client, as another node (or an attacker) would call the peer port. */
function peerClient(address: string, caFile: string | undefined, cert?: IssuedCertificate): PeerServiceClient {
  const credentials = caFile === undefined ? undefined : ChannelCredentials.createSsl(read(caFile), cert === undefined ? null : read(cert.keyFile), cert === undefined ? null : read(cert.certFile));
  // The node certificates name localhost: the usual host name check passes with it as TLS name.
  const channel = createChannel(address, credentials, { 'grpc.ssl_target_name_override': 'localhost' });
  channels.push(channel);
  return createClient(PeerServiceDefinition, channel);
}

async function codeOf(promise: Promise<unknown>): Promise<Status | 'ok'> {
  try {
    await promise;
    return 'ok';
  } catch (err) {
    const code = (err as { code?: Status }).code;
    if (code === undefined) throw err;
    return code;
  }
}

/** The fingerprint of the certificate a TLS port presents now (a fresh handshake). */
function presentedFingerprint(address: string, caFile: string, cert: IssuedCertificate): Promise<string> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, ca: read(caFile), cert: read(cert.certFile), key: read(cert.keyFile), servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.once('error', reject);
  });
}

function fingerprintOf(certFile: string): string {
  return new X509Certificate(read(certFile)).fingerprint256;
}

describe('TLS on the public port', () => {
  let single: SingleNode | undefined;
  afterEach(async () => {
    await single?.close();
    single = undefined;
  });

  it('speaks only TLS: plaintext and a client trusting another CA are refused, a client trusting the CA works', async () => {
    const own = nodeCerts.get('n1')!;
    single = await SingleNode.start('n1', { tls: { certFile: own.certFile, keyFile: own.keyFile } });
    const endpoint = single.node.listen;
    const plaintext = await codeOf(kvClient(endpoint).put('k', 'v'));
    expect(plaintext).toBe(Status.UNAVAILABLE);
    expect(await codeOf(kvClient(endpoint, { ca: read(otherCa.certFile) }).get('k'))).toBe(Status.UNAVAILABLE);
    const good = kvClient(endpoint, { ca: read(ca.certFile) });
    await good.put('k', 'v');
    expect(await good.getString('k')).toBe('v');
  });

  it('with clientCaFile: a client without a certificate, or with one from another CA, is refused; one from the CA works', async () => {
    const own = nodeCerts.get('n1')!;
    single = await SingleNode.start('n1', { tls: { certFile: own.certFile, keyFile: own.keyFile, clientCaFile: ca.certFile } });
    const endpoint = single.node.listen;
    expect(await codeOf(kvClient(endpoint, { ca: read(ca.certFile) }).put('k', 'v'))).toBe(Status.UNAVAILABLE);
    expect(await codeOf(kvClient(endpoint, clientTls(ca.certFile, n2FromOtherCa)).put('k', 'v'))).toBe(Status.UNAVAILABLE);
    const good = kvClient(endpoint, clientTls(ca.certFile, admin));
    await good.put('k', 'v');
    expect(await good.getString('k')).toBe('v');

    // kvctl: flags, or the variables; without a client certificate it cannot connect (exit 4).
    const at = ['--endpoints', endpoint.replace('127.0.0.1', 'localhost'), '--timeout', '3000'];
    expect(await kvctl([...at, '--cacert', ca.certFile, '--cert', admin.certFile, '--key', admin.keyFile, 'put', 'cli', 'yes'])).toMatchObject({ code: 0 });
    expect(await kvctl([...at, 'get', 'cli'], { KVSTORE_CACERT: ca.certFile, KVSTORE_CERT: admin.certFile, KVSTORE_KEY: admin.keyFile })).toMatchObject({ code: 0, out: 'yes' });
    const refused = await kvctl([...at, '--cacert', ca.certFile, 'get', 'cli']);
    expect(refused.code).toBe(4);
    expect(refused.err).toContain('--cacert');
    expect((await kvctl([...at, '--cert', admin.certFile, 'get', 'cli'])).code).toBe(2);
  });

  it('rotation without a restart: new certificates from another CA are served after SIGHUP; the old CA is no longer trusted', async () => {
    const dir = makeTempDir('kvstore-tls-rotate-');
    try {
      const certFile = join(dir, 'node.crt');
      const keyFile = join(dir, 'node.key');
      copyFileSync(nodeCerts.get('n1')!.certFile, certFile);
      copyFileSync(nodeCerts.get('n1')!.keyFile, keyFile);
      single = await SingleNode.start('n1', { tls: { certFile, keyFile } });
      const endpoint = single.node.listen;
      await kvClient(endpoint, { ca: read(ca.certFile) }).put('before', '1');
      const next = issueCertificate(otherCa, dir, { name: 'next', commonName: 'n1', nodeIds: ['n1'], hosts: localHosts, usage: 'node' });
      // Key first, then certificate: a reload in between fails (mismatch) and keeps the old pair.
      copyFileSync(next.keyFile, keyFile);
      copyFileSync(next.certFile, certFile);
      process.kill(single.node.pid!, 'SIGHUP');
      await waitFor('the node to log the reload', () => single!.node.stdoutLines.some((l) => l.includes('certificates reloaded')));
      const rotated = kvClient(endpoint, { ca: read(otherCa.certFile) });
      expect(await rotated.getString('before')).toBe('1');
      expect(await codeOf(kvClient(endpoint, { ca: read(ca.certFile) }).get('before'))).toBe(Status.UNAVAILABLE);
      expect(single.node.running).toBe(true);
    } finally {
      removeTempDir(dir);
    }
  });
});

describe('kvstore certs', () => {
  it('writes a CA, a certificate per node naming kvstore://node/<id> (and localhost), and an admin client certificate; refuses to overwrite a CA; --add issues a later node certificate from the same CA', async () => {
    const dir = makeTempDir('kvstore-certs-cli-');
    try {
      const out = join(dir, 'certs');
      const result = await runKvstore(['certs', '--out', out, '--nodes', 'n1,n2', '--hosts', 'db1.example.com']);
      expect(result.code, describeCli(result)).toBe(0);
      const n1 = new X509Certificate(read(join(out, 'n1.crt')));
      expect(n1.subjectAltName).toBe('URI:kvstore://node/n1, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:db1.example.com');
      expect(n1.checkIssued(new X509Certificate(read(join(out, 'ca.crt'))))).toBe(true);
      const adminCert = new X509Certificate(read(join(out, 'admin.crt')));
      expect(adminCert.subject).toBe('CN=admin');
      expect(adminCert.subjectAltName).toBeUndefined();
      const again = await runKvstore(['certs', '--out', out, '--nodes', 'n1']);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain('--force');
      expect((await runKvstore(['certs', '--out', out, '--nodes', 'bad id'])).code).toBe(2);
      // A node to add later: its certificate from the same CA, nothing else touched.
      const caBefore = read(join(out, 'ca.crt'));
      const n1Before = read(join(out, 'n1.crt'));
      const added = await runKvstore(['certs', '--out', out, '--nodes', 'n3', '--add']);
      expect(added.code, describeCli(added)).toBe(0);
      expect(new X509Certificate(read(join(out, 'n3.crt'))).checkIssued(new X509Certificate(caBefore))).toBe(true);
      expect(new X509Certificate(read(join(out, 'n3.crt'))).subjectAltName).toContain('URI:kvstore://node/n3');
      expect(read(join(out, 'ca.crt')).equals(caBefore) && read(join(out, 'n1.crt')).equals(n1Before)).toBe(true);
      const again1 = await runKvstore(['certs', '--out', out, '--nodes', 'n1', '--add']);
      expect(again1.code).toBe(2);
      expect(again1.stderr).toContain('already holds a certificate or key for n1');
      const noCa = await runKvstore(['certs', '--out', join(dir, 'empty'), '--nodes', 'n1', '--add']);
      expect(noCa.code).toBe(2);
      expect(noCa.stderr).toContain('there is none');
      expect((await runKvstore(['certs', '--out', out, '--nodes', 'n4', '--add', '--force'])).code).toBe(2);
    } finally {
      removeTempDir(dir);
    }
  });
});

describe('certificates checked at start', () => {
  it('a node refuses to start (exit 2, naming the file) on a peer certificate for another node, a key that does not match, or a missing file', async () => {
    const dir = makeTempDir('kvstore-tls-refused-');
    try {
      const n1 = nodeCerts.get('n1')!;
      const n2 = nodeCerts.get('n2')!;
      const members = [{ id: 'n1', peer: '127.0.0.1:1' }, { id: 'n2', peer: '127.0.0.1:2' }];
      const cases: [string, Record<string, unknown>, RegExp][] = [
        ['other-node', { peerTls: { certFile: n2.certFile, keyFile: n2.keyFile, caFile: ca.certFile } }, /peerTls\.certFile .*expected kvstore:\/\/node\/n1/],
        ['mismatched-key', { tls: { certFile: n1.certFile, keyFile: n2.keyFile } }, /^kvstore: tls \(/m],
        ['missing-file', { tls: { certFile: join(dir, 'nope.crt'), keyFile: n1.keyFile } }, /tls\.certFile .*nope\.crt/],
      ];
      for (const [name, extra, message] of cases) {
        const path = join(dir, `${name}.yaml`);
        writeFileSync(path, stringify({ nodeId: 'n1', listen: '127.0.0.1:0', peerListen: '127.0.0.1:0', dataDir: join(dir, name), cluster: { members }, ...extra }));
        const result = await runKvstore(['--config', path]);
        expect(result.code, describeCli(result)).toBe(2);
        expect(result.stderr, name).toMatch(message);
      }
    } finally {
      removeTempDir(dir);
    }
  });
});

describe('mutual TLS between nodes', () => {
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
  });

  const start = (size = 3) => TestCluster.start({ size, nodeConfig: (id) => tlsConfig(id), clientTls: { ca: read(ca.certFile) } });

  it('the peer port refuses plaintext, other CAs, non-members, certificates without a node identity, and n2 acting as n3; the forged far-future tombstone is never applied', async () => {
    cluster = await start();
    const peer = cluster.node('n1').peerListen;
    const forged = { key: Buffer.from('victim'), record: encodeRecord({ version: { wallMs: versionWallMsMax, counter: 0, nodeId: 'n3' }, tombstone: true, value: new Uint8Array() }) };
    const replicate = (client: PeerServiceClient, from: string) => client.replicate({ fromNodeId: from, records: [forged], wantPrevious: [], knownPrevious: [], fromLog: false }, { signal: AbortSignal.timeout(3_000) });

    expect(await codeOf(peerClient(peer, undefined).ping({ fromNodeId: 'n2' }, { signal: AbortSignal.timeout(3_000) }))).toBe(Status.UNAVAILABLE);
    expect(await codeOf(replicate(peerClient(peer, otherCa.certFile, n2FromOtherCa), 'n2'))).toBe(Status.UNAVAILABLE);
    // Our CA, but the server does not take a client without a certificate.
    expect(await codeOf(replicate(peerClient(peer, ca.certFile), 'n2'))).toBe(Status.UNAVAILABLE);
    expect(await codeOf(replicate(peerClient(peer, ca.certFile, nonMember), 'n4'))).toBe(Status.PERMISSION_DENIED);
    expect(await codeOf(replicate(peerClient(peer, ca.certFile, nonMember), 'n3'))).toBe(Status.PERMISSION_DENIED);
    expect(await codeOf(replicate(peerClient(peer, ca.certFile, admin), 'n3'))).toBe(Status.UNAUTHENTICATED);
    const asN2 = peerClient(peer, ca.certFile, nodeCerts.get('n2'));
    expect(await codeOf(replicate(asN2, 'n3'))).toBe(Status.PERMISSION_DENIED);
    expect(await codeOf(asN2.readReplica({ fromNodeId: 'n3', keys: [Buffer.from('victim')], maxBytes: 0n }))).toBe(Status.PERMISSION_DENIED);
    // Its own identity passes (this is how n2 reaches n1).
    expect(await codeOf(asN2.ping({ fromNodeId: 'n2' }, { signal: AbortSignal.timeout(3_000) }))).toBe('ok');

    // None of it was applied: the key stays writable and readable at ALL.
    const n1 = cluster.client('n1');
    await n1.put('victim', 'alive', { consistency: 'all' });
    expect(await n1.getString('victim', { consistency: 'all' })).toBe('alive');
  });

  it('an outgoing peer link verifies the peer is the member it meant to reach', async () => {
    cluster = await start();
    // n1's link to "n2" now lands on n3's peer port: n3's certificate names n3, so n1 refuses it.
    cluster.proxy('n1', 'n2').setTarget(cluster.node('n3').peerListen);
    cluster.proxy('n1', 'n2').heal(); // drops the open connection
    const n1 = cluster.client('n1');
    await waitFor('n1 to see "n2" unreachable', async () => (await n1.status()).members.find((m) => m.nodeId === 'n2')?.reachable === false);
    await n1.put('k', 'v', { consistency: 'quorum' });
    expect(await n1.status().then((s) => s.members.find((m) => m.nodeId === 'n2')!.backlogEntries)).toBeGreaterThan(0);
    // Pointed back at n2, the link comes up and the backlog drains.
    cluster.proxy('n1', 'n2').setTarget(cluster.node('n2').peerListen);
    await waitFor('n1 backlog to n2 to drain', async () => (await n1.status()).members.find((m) => m.nodeId === 'n2')?.backlogEntries === 0);
    expect(await cluster.client('n2').getString('k', { consistency: 'one' })).toBe('v');
  });

  it('a node joins a mutual-TLS cluster: refused on the peer ports until it is added, then streamed its ranges over mutual TLS and serving them', async () => {
    // Fixed peer ports (a member's agreed address is the one it listens on; TestCluster's
    // proxies and ephemeral ports do not carry over to a joiner).
    const dir = makeTempDir('kvstore-tls-join-');
    const peerOf = new Map<string, string>();
    for (const id of ['n1', 'n2', 'n3', 'n4']) peerOf.set(id, `127.0.0.1:${await unusedPort()}`);
    const members = ['n1', 'n2', 'n3'].map((id) => ({ id, peer: peerOf.get(id)! }));
    const certOf = (id: string) => (id === 'n4' ? nonMember : nodeCerts.get(id)!);
    const tlsOf = (id: string) => ({
      tls: { certFile: certOf(id).certFile, keyFile: certOf(id).keyFile },
      peerTls: { certFile: certOf(id).certFile, keyFile: certOf(id).keyFile, caFile: ca.certFile },
      peerListen: peerOf.get(id),
    });
    const nodes = [
      ...members.map(({ id }) => NodeProcess.create(dir, id, { ...tlsOf(id), cluster: { members, replicationFactor: 3 } })),
      NodeProcess.create(dir, 'n4', { ...tlsOf('n4'), cluster: { join: [peerOf.get('n1')], replicationFactor: 3 } }),
    ];
    try {
      await Promise.all(nodes.slice(0, 3).map((n) => n.start()));
      const n1 = kvClient(nodes[0]!.listen, clientTls(ca.certFile));
      await waitFor('n1 to reach n2 and n3', async () => (await n1.status()).members.every((m) => m.reachable));
      const keys = Array.from({ length: 200 }, (_, i) => `before-join-${i}`);
      for (let i = 0; i < keys.length; i += 20) await Promise.all(keys.slice(i, i + 20).map((k) => n1.put(k, `v-${k}`, { consistency: 'all' })));
      const asN4 = peerClient(peerOf.get('n1')!, ca.certFile, nonMember);
      expect(await codeOf(asN4.ping({ fromNodeId: 'n4' }, { signal: AbortSignal.timeout(3_000) }))).toBe(Status.PERMISSION_DENIED);

      const joiner = await nodes[3]!.start();
      const at = ['--endpoints', nodes[0]!.listen, '--cacert', ca.certFile];
      const added = await kvctl([...at, 'member', 'add', 'n4', peerOf.get('n4')!]);
      expect(added.code, added.out + added.err + joiner.output()).toBe(0);
      const waited = await kvctl([...at, 'member', 'wait']);
      expect(waited.code, waited.out + waited.err).toBe(0);
      expect(await codeOf(asN4.ping({ fromNodeId: 'n4' }, { signal: AbortSignal.timeout(3_000) }))).toBe('ok');

      const n4 = kvClient(joiner.listen, clientTls(ca.certFile));
      const status = await n4.status();
      expect(status.members.map((m) => `${m.nodeId}:${m.state}`)).toEqual(['n1:normal', 'n2:normal', 'n3:normal', 'n4:normal']);
      // With 4 members and 3 replicas n4 owns about 3 in 4 keys: streamed to it, not left empty.
      expect(Number(status.keyCount)).toBeGreaterThan(100);
      // At ALL every replica answers, n4 included for the keys it owns, over the peers' mutual TLS.
      for (const k of keys) expect(await n4.getString(k, { consistency: 'all' })).toBe(`v-${k}`);
      await n4.put('after-join', 'yes', { consistency: 'all' });
      expect(await n1.getString('after-join', { consistency: 'all' })).toBe('yes');
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      removeTempDir(dir);
    }
  }, 90_000);

  it('3 nodes with mutual TLS replicate, repair and survive a SIGKILL; a rotated peer certificate is served without a restart', async () => {
    cluster = await start();
    const n1 = cluster.client('n1');
    await n1.put('greeting', 'hello', { consistency: 'all' });
    for (const id of cluster.ids) expect(await cluster.client(id).getString('greeting', { consistency: 'one' })).toBe('hello');

    await cluster.node('n2').kill();
    const keys = Array.from({ length: 50 }, (_, i) => `down-${i}`);
    for (const k of keys) await n1.put(k, `v-${k}`, { consistency: 'quorum' });
    await cluster.startNode('n2');
    const n2 = cluster.client('n2');
    await waitFor('n1 backlog to n2 to drain', async () => (await n1.status()).members.find((m) => m.nodeId === 'n2')?.backlogEntries === 0);
    for (const k of keys) expect(await n2.getString(k, { consistency: 'one' })).toBe(`v-${k}`);

    const repair = await n1.repair();
    expect(repair.peers.map((p) => [p.nodeId, p.error])).toEqual([['n2', undefined], ['n3', undefined]]);
    expect(repair.peers.every((p) => p.rangesCompared > 0)).toBe(true);
    const verify = await n1.verify();
    expect(verify.differingRanges).toBe(0);

    // Rotation by replacing the files (no signal): n3's peer port presents the new certificate.
    const n3cert = nodeCerts.get('n3')!;
    const before = await presentedFingerprint(cluster.node('n3').peerListen, ca.certFile, nodeCerts.get('n1')!);
    expect(before).toBe(fingerprintOf(n3cert.certFile));
    const next = issueCertificate(ca, join(certDir, 'rotated'), { name: 'n3', commonName: 'n3', nodeIds: ['n3'], hosts: localHosts, usage: 'node' });
    copyFileSync(next.keyFile, n3cert.keyFile);
    copyFileSync(next.certFile, n3cert.certFile);
    await waitFor('n3 to present the rotated certificate', async () => (await presentedFingerprint(cluster!.node('n3').peerListen, ca.certFile, nodeCerts.get('n1')!)) === fingerprintOf(next.certFile));
    await n1.put('after-rotation', 'yes', { consistency: 'all' });
    expect(await cluster.client('n3').getString('after-rotation', { consistency: 'one' })).toBe('yes');
  });
});
