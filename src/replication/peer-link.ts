import type { Clock } from '../platform/clock.js';
import type { PeerConnection, PeerTransport } from '../platform/peer-transport.js';

export { peerChannelOptions, peerReceiveBytesFloor, peerReceiveBytesMax } from '../platform/peer-transport.js';

/**
 * The transport with every unary call's outcome reported to `link`: an answer is contact, an
 * error a failure. The one place reachability is learned from calls; the streams report theirs
 * in PeerStream. Ping is left to the prober, which also checks who answered.
 */
function reportingOutcomes(transport: PeerTransport, link: PeerLink): PeerTransport {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(transport as unknown as Record<string, (...args: unknown[]) => unknown>)) {
    if (typeof method !== 'function') continue;
    wrapped[name] =
      name === 'ping' || name === 'replicateStream' || name === 'readReplicaStream'
        ? method.bind(transport)
        : (...args: unknown[]) =>
            (method.apply(transport, args) as Promise<unknown>).then(
              (answer) => {
                link.markContact();
                return answer;
              },
              (error: unknown) => {
                link.markFailure(error);
                throw error;
              },
            );
  }
  return wrapped as unknown as PeerTransport;
}

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
  /** The same contact on the monotonic clock (undefined before the first): for "reached within N s" checks a clock step cannot fool. */
  lastContactMonotonicMs: number | undefined;
  lastError: string | undefined;
  private readonly listeners: ReachabilityListener[] = [];

  constructor(
    readonly id: string,
    readonly address: string,
    /** Largest message this link sends: batches and asked answers are sized below it. */
    readonly messageBytesMax: number,
    connection: PeerConnection,
    /** This node's clock (timers of calls to this peer, contact times). */
    readonly clock: Clock,
  ) {
    this.connection = connection;
    this.client = reportingOutcomes(connection.transport, this);
  }

  onReachabilityChange(listener: ReachabilityListener): void {
    this.listeners.push(listener);
  }

  markContact(): void {
    this.lastContactMs = this.clock.wallMs();
    this.lastContactMonotonicMs = this.clock.monotonicMs();
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
