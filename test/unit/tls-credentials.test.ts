import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate, type CertificateAuthority, type IssuedCertificate } from '../../src/launcher/dev-certificates.js';
import { certificateNodeId, certificateNodeIds, checkNodeIdentity, ownPeerCertificateCheck, ReloadingTls, TlsConfigError } from '../../src/server/tls-credentials.js';
import { makeTempDir, removeTempDir } from '../helpers/node-process.js';

describe('node identity from a certificate (SAN URI kvstore://node/<id>)', () => {
  it('reads the URI, ignores other SANs, and names no node when there are none or several', () => {
    expect(certificateNodeIds('URI:kvstore://node/n1, DNS:localhost, IP Address:127.0.0.1')).toEqual(['n1']);
    expect(certificateNodeId({ subjectaltname: 'DNS:n1, URI:kvstore://node/n2' })).toBe('n2');
    expect(certificateNodeId({ subjectaltname: 'URI:kvstore://node/n1, URI:kvstore://node/n2' })).toBeUndefined();
    expect(certificateNodeId({ subjectaltname: 'DNS:n1' })).toBeUndefined();
    expect(certificateNodeId(undefined)).toBeUndefined();
    // Not our scheme, a path beyond the id, a quoted (escaped) entry: none is an identity.
    expect(certificateNodeIds('URI:https://node/n1, URI:kvstore://node/n1/x, URI:"kvstore://node/n1, DNS:x"')).toEqual([]);
  });

  it('checkNodeIdentity accepts exactly the expected member', () => {
    expect(checkNodeIdentity('n2', 'URI:kvstore://node/n2')).toBeUndefined();
    expect(checkNodeIdentity('n2', 'URI:kvstore://node/n3')?.message).toContain('expected kvstore://node/n2');
    expect(checkNodeIdentity('n2', 'DNS:localhost')?.message).toContain('names no kvstore node');
  });
});

describe('ReloadingTls', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let n1: IssuedCertificate;
  let n1b: IssuedCertificate;
  const logger = pino({ level: 'silent' });

  beforeAll(() => {
    dir = makeTempDir('kvstore-tls-unit-');
    ca = createCa(dir);
    n1 = issueCertificate(ca, dir, { name: 'n1', commonName: 'n1', nodeIds: ['n1'], usage: 'node' });
    n1b = issueCertificate(ca, join(dir, 'b'), { name: 'n1', commonName: 'n1', nodeIds: ['n1'], usage: 'node' });
  });
  afterAll(() => removeTempDir(dir));

  it('refuses at start a key that does not match, unreadable files, and a peer certificate for another node', () => {
    expect(() => new ReloadingTls({ certFile: n1.certFile, keyFile: n1b.keyFile }, 'tls', logger)).toThrow(TlsConfigError);
    expect(() => new ReloadingTls({ certFile: join(dir, 'missing.crt'), keyFile: n1.keyFile }, 'tls', logger)).toThrow(/tls\.certFile .*missing\.crt/);
    expect(() => new ReloadingTls({ certFile: n1.certFile, keyFile: n1.keyFile, caFile: ca.certFile }, 'peerTls', logger, ownPeerCertificateCheck('n2', n1.certFile))).toThrow(
      /expected kvstore:\/\/node\/n2/,
    );
  });

  it('a failed reload keeps the previous certificates; a good one replaces them and tells listeners', () => {
    const live = makeTempDir('kvstore-tls-live-');
    const certFile = join(live, 'n1.crt');
    const keyFile = join(live, 'n1.key');
    copyFileSync(n1.certFile, certFile);
    copyFileSync(n1.keyFile, keyFile);
    const tls = new ReloadingTls({ certFile, keyFile, caFile: ca.certFile }, 'peerTls', logger);
    try {
      const seen: Buffer[] = [];
      tls.onChange((t) => seen.push(t.cert));
      const before = tls.current.cert;
      expect(tls.reload('test')).toBe(false); // nothing changed
      copyFileSync(n1b.keyFile, keyFile); // key rotated, certificate not yet: mismatch
      expect(tls.reload('test')).toBe(false);
      expect(tls.current.cert.equals(before)).toBe(true);
      writeFileSync(certFile, 'not a certificate');
      expect(tls.reload('test')).toBe(false);
      copyFileSync(n1b.certFile, certFile);
      expect(tls.reload('test')).toBe(true);
      expect(tls.current.cert.equals(before)).toBe(false);
      expect(seen).toHaveLength(1);
      expect(tls.reloads).toBe(1);
    } finally {
      tls.close();
      removeTempDir(live);
    }
  });
});
