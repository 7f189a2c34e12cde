import type { Logger } from 'pino';
import type { PeerLink } from './peer-link.js';

/**
 * Pings peers that have had no successful contact for a probe interval, so reachability in
 * Status stays current and a peer that comes back is noticed even with nothing to deliver (which
 * also cuts the delivery loop's backoff short). A ping answered by a different node id counts as
 * a failure: the member list points at the wrong process.
 */
export class PeerProber {
  private timer: NodeJS.Timeout | undefined;
  private inFlight = new Set<string>();

  constructor(
    private readonly selfId: string,
    private readonly links: readonly PeerLink[],
    private readonly intervalMs: number,
    /** Deadline of one ping: a node's call deadline, not the (shorter) probe interval. */
    private readonly pingTimeoutMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.probeAll();
    this.timer = setInterval(() => this.probeAll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private probeAll(): void {
    const now = Date.now();
    for (const link of this.links) {
      if (this.inFlight.has(link.id)) continue;
      if (link.reachable && now - link.lastContactMs < this.intervalMs) continue;
      this.inFlight.add(link.id);
      link.client
        .ping({ fromNodeId: this.selfId }, { signal: AbortSignal.timeout(this.pingTimeoutMs) })
        .then((res) => {
          if (res.nodeId === link.id) {
            if (!link.reachable) this.logger.info({ peer: link.id }, 'peer reachable');
            link.markContact();
          } else {
            link.markFailure(new Error(`peer address ${link.address} answers as node "${res.nodeId}", not "${link.id}"`));
          }
        })
        .catch((err: Error) => {
          if (link.reachable) this.logger.warn({ peer: link.id, err: err.message }, 'peer unreachable');
          link.markFailure(err);
        })
        .finally(() => this.inFlight.delete(link.id));
    }
  }
}
