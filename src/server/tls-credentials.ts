/**
 * TLS for both ports: certificates loaded from files, re-read without a restart (SIGHUP, or when a
 * file changes), and the node identity of a peer taken from its certificate.
 *
 * Identity: a node's certificate names its member id in exactly one subject alternative name URI,
 * `kvstore://node/<id>`. A URI SAN, not the subject CN: client certificates name users by CN
 * (auth), so a user certificate "n2" from the same CA can never pass for node n2, and a node
 * certificate needs no DNS name or IP matching its address (addresses may change; the member id
 * is what a caller means to reach).
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createSecureContext, type PeerCertificate, type SecureContextOptions } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { onReload } from '../common/reload-signal.js';

/** Prefix of the SAN URI that names a node: `kvstore://node/<member id>`. */
export const nodeIdentityUriPrefix = 'kvstore://node/';
/**
 * Metadata key under which the peer server hands handlers the node id its caller's certificate
 * names. Set only by the server (peerIdentityInterceptor), which first removes whatever a caller
 * sent under that key.
 */
export const peerIdentityMetadataKey = 'kvstore-verified-peer-node-id';
/**
 * How often certificate files are checked for changes (a stat per file): rotation by replacing the
 * files takes effect within this without a signal. SIGHUP reloads at once.
 */
export const certificateFilePollMs = 2_000;

/** The files of one TLS identity: certificate chain and key (PEM), and the CA to verify the other side. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** PEM bundle of the CA certificates that sign the other side's certificates; unset: none asked. */
  readonly caFile?: string | undefined;
}

interface LoadedTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer | undefined;
}

/** Raised when certificate files cannot be read or do not make a usable TLS identity. */
export class TlsConfigError extends Error {
  override name = 'TlsConfigError';
}

function readTls(files: TlsFiles, what: string): LoadedTls {
  const read = (path: string, field: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new TlsConfigError(`${what}.${field} ${path}: ${(err as Error).message}`);
    }
  };
  const loaded = { cert: read(files.certFile, 'certFile'), key: read(files.keyFile, 'keyFile'), ca: files.caFile === undefined ? undefined : read(files.caFile, 'caFile') };
  try {
    // Parses the PEM and checks that the key belongs to the certificate.
    createSecureContext({ cert: loaded.cert, key: loaded.key, ...(loaded.ca === undefined ? {} : { ca: loaded.ca }) });
  } catch (err) {
    throw new TlsConfigError(`${what} (${files.certFile}, ${files.keyFile}${files.caFile === undefined ? '' : `, ${files.caFile}`}): ${(err as Error).message}`);
  }
  return loaded;
}

/**
 * Node ids named by a certificate's `kvstore://node/<id>` SAN URIs (Node's `subjectaltname` text:
 * "URI:kvstore://node/n1, DNS:localhost"; entries with unusual characters come quoted and never
 * match a member id's characters).
 */
export function certificateNodeIds(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return [];
  const ids: string[] = [];
  for (const entry of subjectAltName.split(', ')) {
    const m = /^URI:kvstore:\/\/node\/([A-Za-z0-9][A-Za-z0-9._-]{0,63})$/.exec(entry);
    if (m !== null) ids.push(m[1]!);
  }
  return ids;
}

/** The one node id a certificate names, or undefined when it names none or several (ambiguous). */
export function certificateNodeId(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string | undefined {
  const ids = certificateNodeIds(cert?.subjectaltname);
  return ids.length === 1 ? ids[0] : undefined;
}

/**
 * One TLS identity read from files, re-read on SIGHUP and when a file changes. A reload that
 * fails (a file half-written, a key that does not match its certificate) is logged and the
 * previous certificates stay in use; the next change or signal tries again. Listeners get each
 * successful reload; already open connections keep the certificates they were made with.
 */
export class ReloadingTls {
  private loaded: LoadedTls;
  private readonly listeners = new Set<(tls: LoadedTls) => void>();
  private readonly stopSignal: () => void;
  private readonly watched: string[];
  /** Successful reloads that changed something (for tests and logs). */
  reloads = 0;

  /**
   * @param what the config section, for messages ("tls", "peerTls")
   * @param check extra validation of a loaded certificate (throws TlsConfigError)
   */
  constructor(
    private readonly files: TlsFiles,
    private readonly what: string,
    private readonly logger: Logger,
    private readonly check: (cert: X509Certificate) => void = () => {},
  ) {
    this.loaded = this.load();
    this.stopSignal = onReload(() => this.reload('SIGHUP'));
    this.watched = [files.certFile, files.keyFile, ...(files.caFile === undefined ? [] : [files.caFile])];
    for (const path of this.watched) watchFile(path, { interval: certificateFilePollMs, persistent: false }, this.onFileChange);
  }

  get current(): LoadedTls {
    return this.loaded;
  }

  private readonly onFileChange = () => this.reload('file changed');

  private load(): LoadedTls {
    const loaded = readTls(this.files, this.what);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(loaded.cert);
    } catch (err) {
      throw new TlsConfigError(`${this.what}.certFile ${this.files.certFile}: ${(err as Error).message}`);
    }
    this.check(cert);
    return loaded;
  }

  /** Re-reads the files; answers whether new certificates are in use. */
  reload(reason: string): boolean {
    let next: LoadedTls;
    try {
      next = this.load();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message, section: this.what, reason }, `${this.what}: certificates not reloaded, the previous ones stay in use`);
      return false;
    }
    const prev = this.loaded;
    if (prev.cert.equals(next.cert) && prev.key.equals(next.key) && (prev.ca === next.ca || (prev.ca !== undefined && next.ca !== undefined && prev.ca.equals(next.ca)))) return false;
    this.loaded = next;
    this.reloads++;
    this.logger.info({ section: this.what, reason, certFile: this.files.certFile }, `${this.what}: certificates reloaded (new connections use them)`);
    for (const l of this.listeners) l(next);
    return true;
  }

  onChange(listener: (tls: LoadedTls) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.stopSignal();
    for (const path of this.watched) unwatchFile(path, this.onFileChange);
    this.listeners.clear();
  }
}

/**
 * Server credentials whose certificates can be swapped on a listening server: grpc-js calls
 * `setSecureContext` on its HTTP/2 server for every update (the watcher mechanism its own
 * certificate-provider credentials use). Handshakes after an update use the new certificates.
 */
class ReloadableServerCredentials extends grpc.ServerCredentials {
  constructor(requireClientCertificate: boolean, initial: SecureContextOptions) {
    // rejectUnauthorized: a client without a certificate from the CA fails the handshake.
    super({ requestCert: requireClientCertificate, rejectUnauthorized: requireClientCertificate }, initial);
  }

  update(options: SecureContextOptions): void {
    this.updateSecureContextOptions(options);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

function contextOptions(tls: LoadedTls): SecureContextOptions {
  return { cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }) };
}

/**
 * Credentials of a TLS server port following `source`'s reloads. With a CA (tls.clientCaFile,
 * peerTls.caFile), a client must present a certificate signed by it.
 */
export function serverCredentials(source: ReloadingTls, interceptors: grpc.ServerInterceptor[] = []): grpc.ServerCredentials {
  const credentials = new ReloadableServerCredentials(source.current.ca !== undefined, contextOptions(source.current));
  source.onChange((tls) => credentials.update(contextOptions(tls)));
  return interceptors.length === 0 ? credentials : grpc.experimental.createServerCredentialsWithInterceptors(credentials, interceptors);
}

/**
 * Peer server interceptor: puts the node id the caller's certificate names (the TLS handshake
 * already verified it against peerTls.caFile) into the call's metadata under
 * peerIdentityMetadataKey, after removing anything the caller sent under that key, so handlers
 * (peer-service.ts) read an identity only the certificate can give.
 */
export const peerIdentityInterceptor: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start(next) {
      next({
        onReceiveMetadata(metadata, nextMetadata) {
          metadata.remove(peerIdentityMetadataKey);
          const id = certificateNodeId(call.getAuthContext().sslPeerCertificate);
          if (id !== undefined) metadata.set(peerIdentityMetadataKey, id);
          nextMetadata(metadata);
        },
      });
    },
  });

/** A CertificateProvider (grpc-js) over a ReloadingTls: channels' new connections use the latest certificates. */
class ReloadingCertificateProvider implements grpc.experimental.CertificateProvider {
  private readonly ca = new Set<grpc.experimental.CaCertificateUpdateListener>();
  private readonly identity = new Set<grpc.experimental.IdentityCertificateUpdateListener>();

  constructor(private readonly source: ReloadingTls) {
    source.onChange((tls) => {
      for (const l of this.ca) l(tls.ca === undefined ? null : { caCertificate: tls.ca });
      for (const l of this.identity) l({ certificate: tls.cert, privateKey: tls.key });
    });
  }

  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.ca.add(listener);
    const { ca } = this.source.current;
    listener(ca === undefined ? null : { caCertificate: ca });
  }

  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.ca.delete(listener);
  }

  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identity.add(listener);
    const { cert, key } = this.source.current;
    listener({ certificate: cert, privateKey: key });
  }

  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identity.delete(listener);
  }
}

/** Checks that a certificate names exactly `expectedId` as its node identity. */
export function checkNodeIdentity(expectedId: string, subjectAltName: string | undefined): Error | undefined {
  const ids = certificateNodeIds(subjectAltName);
  if (ids.length === 1 && ids[0] === expectedId) return undefined;
  const named = ids.length === 0 ? 'no kvstore node' : ids.map((id) => `${nodeIdentityUriPrefix}${id}`).join(', ');
  return new Error(`peer certificate names ${named}; expected ${nodeIdentityUriPrefix}${expectedId}`);
}

/**
 * Channel credentials for the peer link to member `memberId`: mutual TLS with this node's
 * certificate, the peer's verified against peerTls.caFile, and the peer's certificate must name
 * `memberId` (instead of the usual host name check: the member id is what we mean to reach).
 * Certificates follow `source`'s reloads for new connections.
 */
export function peerChannelCredentials(source: ReloadingTls, memberId: string): grpc.ChannelCredentials {
  const provider = new ReloadingCertificateProvider(source);
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: (_host, cert) => checkNodeIdentity(memberId, cert.subjectaltname),
  });
}

/**
 * Channel credentials for a peer whose id is not known yet (a `cluster.join` address, probed at
 * start): mutual TLS as peerChannelCredentials, the peer's certificate verified against
 * peerTls.caFile and naming exactly one kvstore node, whichever.
 */
export function peerChannelCredentialsAnyNode(source: ReloadingTls): grpc.ChannelCredentials {
  const provider = new ReloadingCertificateProvider(source);
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: (_host, cert) => (certificateNodeIds(cert.subjectaltname).length === 1 ? undefined : new Error('peer certificate names no single kvstore node')),
  });
}

/**
 * Channel options for a peer link with peerTls: the TLS server name (SNI) is the member id, not
 * the address (an IP address is not a valid SNI name, and the identity check ignores it anyway).
 */
export function peerTlsChannelOptions(memberId: string): Record<string, string> {
  return { 'grpc.ssl_target_name_override': memberId };
}

/** Validation of a node's own peer certificate: it must name this node, or every peer refuses it. */
export function ownPeerCertificateCheck(selfId: string, certFile: string): (cert: X509Certificate) => void {
  return (cert) => {
    const error = checkNodeIdentity(selfId, cert.subjectAltName);
    if (error !== undefined) throw new TlsConfigError(`peerTls.certFile ${certFile}: ${error.message.replace('peer certificate', 'the certificate')} (nodeId)`);
  };
}
