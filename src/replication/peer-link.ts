import type { Clock } from '../platform/clock.js';
import type { PeerConnection, PeerTransport } from '../platform/peer-transport.js';

export { peerChannelOptions, peerReceiveBytesFloor, peerReceiveBytesMax } from '../platform/peer-transport.js';

type ReachabilityListener = (peer: PeerLink, reachable: boolean) => void;

/**
 * This node's connection to one peer and what it knows of the peer's health: whether the last
 * contact succeeded and when. Every call to the peer reports its outcome here, so the delivery
 * loop, the coordinator and Status share one view.
 */
export class PeerLink {
  /** The calls to this peer (gRPC, or in memory in the simulator). */
  readonly client: PeerTransport;
  private readonly connection: PeerConnection;
  reachable = true;
  lastContactMs = 0;
  lastError: string | undefined;
  private readonly listeners: ReachabilityListener[] = [];

  constructor(
    readonly id: string,
    readonly address: string,
    /** Largest message this link sends: batches and asked answers are sized below it. */
    readonly messageBytesMax: number,
    connection: PeerConnection,
    private readonly clock: Clock,
  ) {
    this.connection = connection;
    this.client = connection.transport;
  }

  onReachabilityChange(listener: ReachabilityListener): void {
    this.listeners.push(listener);
  }

  markContact(): void {
    this.lastContactMs = this.clock.wallMs();
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
    this.connection.close();
  }
}
