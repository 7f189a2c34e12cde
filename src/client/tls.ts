import { ChannelCredentials } from 'nice-grpc';
import type { KvTlsOptions } from './types.js';

function pem(value: string | Uint8Array | undefined, name: string): Buffer | null {
  if (value === undefined) return null;
  if (typeof value === 'string') return Buffer.from(value);
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new Error(`KvClient: tls.${name} must be a PEM string or a Buffer`);
}

/** The channel credentials of `KvClientOptions.tls` (undefined: plaintext). */
export function channelCredentials(tls: KvTlsOptions | undefined): ChannelCredentials | undefined {
  if (tls === undefined) return undefined;
  if (typeof tls !== 'object' || tls === null) throw new Error('KvClient: tls must be an object { ca?, cert?, key? }');
  const ca = pem(tls.ca, 'ca');
  const cert = pem(tls.cert, 'cert');
  const key = pem(tls.key, 'key');
  if ((cert === null) !== (key === null)) throw new Error('KvClient: tls.cert and tls.key go together (a client certificate and its private key)');
  try {
    return ChannelCredentials.createSsl(ca, key, cert);
  } catch (err) {
    throw new Error(`KvClient: tls: ${(err as Error).message}`);
  }
}
