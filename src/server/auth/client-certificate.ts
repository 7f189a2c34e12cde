import * as grpc from '@grpc/grpc-js';
import type { CallContext } from 'nice-grpc';
import type { PeerCertificate } from 'node:tls';
import { certificateNodeIds } from '../tls-credentials.js';

/**
 * Certificate authentication on the public port (tls.clientCaFile with auth): a client
 * certificate, verified against the client CA by the TLS handshake, names the user whose name is
 * its subject CN. The interceptor hands that CN to the auth middleware under a metadata key only
 * it sets: it first removes whatever a caller sent under that key.
 *
 * A node's certificate (one with a `kvstore://node/<id>` SAN URI) names no user, whatever its CN:
 * a node is not a client of the public API, and its CN is its node id.
 */
export const clientCertificateCnMetadataKey = 'kvstore-verified-client-cn';

/** The user name a verified client certificate gives, or undefined. */
export function certificateUserName(cert: Pick<PeerCertificate, 'subject' | 'subjectaltname'> | null | undefined): string | undefined {
  if (cert === null || cert === undefined || cert.subject === undefined) return undefined;
  if (certificateNodeIds(cert.subjectaltname).length > 0) return undefined;
  const cn: unknown = cert.subject.CN;
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}

/** Public server interceptor: the verified client certificate's user name into the call's metadata. */
export const clientCertificateInterceptor: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start(next) {
      next({
        onReceiveMetadata(metadata, nextMetadata) {
          metadata.remove(clientCertificateCnMetadataKey);
          const name = certificateUserName(call.getAuthContext().sslPeerCertificate);
          if (name !== undefined) metadata.set(clientCertificateCnMetadataKey, name);
          nextMetadata(metadata);
        },
      });
    },
  });

/** The auth middleware's CertificateCnOf when the interceptor runs on the public server. */
export function certificateCnFromMetadata(context: CallContext): string | undefined {
  return verifiedCn(context.metadata.get(clientCertificateCnMetadataKey));
}

/** certificateCnFromMetadata for a call read on grpc-js directly (direct-unary.ts). */
export function certificateCnFromGrpcMetadata(metadata: grpc.Metadata): string | undefined {
  return verifiedCn(metadata.get(clientCertificateCnMetadataKey)[0]);
}

function verifiedCn(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
