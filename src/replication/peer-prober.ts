import type { Logger } from 'pino';
import type { Clock } from '../platform/clock.js';
import { type BackgroundService, PeriodicTask } from '../platform/periodic.js';
import type { PingResponse } from '../../gen/kvstore/internal/v1/peer.js';
import type { PeerLink } from './peer-link.js';

/**
 * Pings peers that have had no successful contact for a probe interval, so reachability in
 * Status stays current and a peer that comes back is noticed even with nothing to deliver (which
 * also cuts the delivery loop's backoff short). A ping answered by a different node id counts as
 * a failure: the member list points at the wrong process.
 */
export class PeerProber implements BackgroundService {
  private inFlight = new Set<string>();
  private readonly task: PeriodicTask;

  constructor(
    private readonly selfId: string,
    /** Every member not removed, dead ones too: Status shows whether they answer. */
    private readonly links: () => readonly PeerLink[],
    private readonly intervalMs: number,
    /** Deadline of one ping: a node's call deadline, not the (shorter) probe interval. */
    private readonly pingTimeoutMs: number,
    private readonly logger: Logger,
    private readonly clock: Clock,
    /** Told of every answer from the node expected (the membership catch-up reads its epoch). */
    private readonly onAnswer: (link: PeerLink, answer: PingResponse) => void = () => {},
  ) {
    this.task = new PeriodicTask(clock, intervalMs, () => this.probeAll(), (err) => logger.error({ err }, 'peer probe round failed'), true);
  }

  start(): void {
    this.task.start();
  }

  stop(): Promise<void> {
    return this.task.stop();
  }

  private probeAll(): void {
    // lastContactMs is wall time (Status shows it).
    const now = this.clock.wallMs();
    for (const link of this.links()) {
      if (this.inFlight.has(link.id)) continue;
      if (link.reachable && now - link.lastContactMs < this.intervalMs) continue;
      this.inFlight.add(link.id);
      link.client
        .ping({ fromNodeId: this.selfId }, { signal: this.clock.timeoutSignal(this.pingTimeoutMs) })
        .then((res) => {
          if (res.nodeId === link.id) {
            if (!link.reachable) this.logger.info({ peer: link.id }, 'peer reachable');
            link.markContact();
            this.onAnswer(link, res);
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
