import { type Channel, type ChannelCredentials, type ChannelOptions, createChannel, createClient } from 'nice-grpc';
import { type PeerServiceClient, PeerServiceDefinition } from '../../gen/kvstore/internal/v1/peer.js';

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
    'grpc.max_receive_message_length': peerReceiveBytesMax(messageBytesMax),
    'grpc.max_send_message_length': messageBytesMax,
    // Reconnect quickly after a peer restarts; the delivery loop has its own backoff.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 5_000,
  };
}

type ReachabilityListener = (peer: PeerLink, reachable: boolean) => void;

/**
 * This node's connection to one peer and what it knows of the peer's health: whether the last
 * contact succeeded and when. Every call to the peer reports its outcome here, so the delivery
 * loop, the coordinator and Status share one view.
 */
export class PeerLink {
  readonly client: PeerServiceClient;
  private readonly channel: Channel;
  reachable = true;
  lastContactMs = 0;
  lastError: string | undefined;
  private readonly listeners: ReachabilityListener[] = [];

  constructor(
    readonly id: string,
    readonly address: string,
    /** Largest message this link sends: batches and asked answers are sized below it. */
    readonly messageBytesMax: number,
    /** Mutual TLS towards this peer (peerTls), with its channel options; unset: plaintext. */
    tls?: { readonly credentials: ChannelCredentials; readonly channelOptions: ChannelOptions },
  ) {
    this.channel = createChannel(address, tls?.credentials, { ...peerChannelOptions(messageBytesMax), ...tls?.channelOptions });
    this.client = createClient(PeerServiceDefinition, this.channel);
  }

  onReachabilityChange(listener: ReachabilityListener): void {
    this.listeners.push(listener);
  }

  markContact(): void {
    this.lastContactMs = Date.now();
    this.lastError = undefined;
    if (!this.reachable) {
      this.reachable = true;
      for (const l of this.listeners) l(this, true);
    }
  }

  markFailure(error: unknown): void {
    this.lastError = error instanceof Error ? error.message : String(error);
    if (this.reachable) {
      this.reachable = false;
      for (const l of this.listeners) l(this, false);
    }
  }

  close(): void {
    this.channel.close();
  }
}
