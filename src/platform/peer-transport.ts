import { type ChannelCredentials, type ChannelOptions, createChannel, createClient } from 'nice-grpc';
import { type PeerServiceClient, PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';
import { channelzOff } from '../common/grpc-options.js';

/**
 * The peer transport seam: every call one node makes to another (replicate, read replica, scan,
 * digests, ping, tombstone confirm/purge, backup; the two bidirectional streams) goes through a
 * PeerTransport, the generated client's shape. Two implementations: gRPC (`grpcPeerConnector`,
 * production) and in memory over a simulated network (src/sim/sim-network.ts), which calls the
 * other node's peer-service implementation directly.
 */
export type PeerTransport = PeerServiceClient;

/** An open transport to one peer, and how to close it. */
export interface PeerConnection {
  readonly transport: PeerTransport;
  close(): void;
}

/** Opens the connection to a peer: `id` is the member meant, `address` its peerListen, `messageBytesMax` the largest request. */
export type PeerConnector = (id: string, address: string, messageBytesMax: number) => PeerConnection;

/**
 * Floor of the largest peer message received: gRPC's default limit, above a ScanLocal page (1000
 * version headers of keys up to 1974 bytes, about 2.3 MB) however small the configured batch
 * and value limits are.
 */
export const peerReceiveBytesFloor = 4 * 1024 * 1024;

/**
 * The largest message a peer link receives for a node whose requests are at most
 * `messageBytesMax`, and so the largest a peer server should send (its
 * 'grpc.max_send_message_length'): the peer's answers are bounded too (ReadReplica and
 * BucketRecords by the max_bytes we ask with, below `messageBytesMax`; ScanLocal by its page).
 */
export function peerReceiveBytesMax(messageBytesMax: number): number {
  return Math.max(messageBytesMax, peerReceiveBytesFloor);
}

/**
 * gRPC channel options for node-to-node traffic: batches can be large, and so can answers, but
 * both are bounded (see peerReceiveBytesMax).
 */
export function peerChannelOptions(messageBytesMax: number): ChannelOptions {
  return {
    ...channelzOff,
    'grpc.max_receive_message_length': peerReceiveBytesMax(messageBytesMax),
    'grpc.max_send_message_length': messageBytesMax,
    // Reconnect quickly after a peer restarts; the delivery loop has its own backoff.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 5_000,
  };
}

/**
 * The gRPC connector: one channel per peer. `tls(id)` gives the mutual-TLS credentials and
 * channel options towards member `id` (peerTls), or undefined for plaintext.
 */
export function grpcPeerConnector(tls?: (id: string) => { readonly credentials: ChannelCredentials; readonly channelOptions: ChannelOptions }): PeerConnector {
  return (id, address, messageBytesMax) => {
    const secure = tls?.(id);
    const channel = createChannel(address, secure?.credentials, { ...peerChannelOptions(messageBytesMax), ...secure?.channelOptions });
    return { transport: createClient(PeerServiceDefinition, channel), close: () => channel.close() };
  };
}
