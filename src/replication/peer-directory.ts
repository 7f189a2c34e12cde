import type { Logger } from 'pino';
import type { MembershipState } from '../cluster/membership.js';
import type { HintLog } from '../storage/hint-log.js';
import type { DeliveryLoop } from './delivery-loop.js';
import type { PeerLink } from './peer-link.js';
import type { ReadBatcher } from './read-batcher.js';

/** Builds the per-peer parts; composeNodeCore supplies it (gRPC links in a node, in memory in the simulator). */
export interface PeerFactory {
  /**
   * The address this node dials for a member: its agreed peer address, unless this node's config
   * names another for it (a proxy, or NAT: the address a member is reached at can differ per node).
   */
  dialAddress(id: string, agreed: string): string;
  link(id: string, address: string): PeerLink;
  loop(link: PeerLink): DeliveryLoop;
  reader(link: PeerLink): ReadBatcher;
}

/** Everything this node keeps for one other member. */
interface PeerEntry {
  readonly link: PeerLink;
  readonly reader: ReadBatcher;
  /** Absent for a member declared dead: nothing is queued for it or delivered to it. */
  loop: DeliveryLoop | undefined;
}

/**
 * This node's links to the other members, their delivery loops, read batchers and
 * replication-log queues, kept in step with the committed membership (docs/membership.md §7.3):
 * `sync` adds what a new member needs, stops delivery to a member declared dead (its queue is
 * dropped: survivors re-replicate its ranges), and closes everything of a removed one. The
 * coordinator, anti-entropy, tombstone GC and the prober look peers up here per call.
 */
export class PeerDirectory {
  private readonly entries = new Map<string, PeerEntry>();
  private liveLinks: PeerLink[] = [];
  private allLinks: PeerLink[] = [];
  private liveLoops: DeliveryLoop[] = [];
  private started = false;
  private readonly loopListeners: ((loop: DeliveryLoop) => void)[] = [];
  private syncing: Promise<void> = Promise.resolve();

  constructor(
    private readonly selfId: string,
    private readonly factory: PeerFactory,
    private readonly hints: HintLog,
    private readonly logger: Logger,
  ) {}

  /** Links to members that are not dead: the ones replication, repair and GC talk to. */
  links(): readonly PeerLink[] {
    return this.liveLinks;
  }

  /** Links to every member that is not removed, dead ones too (Status shows their reachability). */
  everyLink(): readonly PeerLink[] {
    return this.allLinks;
  }

  /** Delivery loops of the members that are not dead. */
  loops(): readonly DeliveryLoop[] {
    return this.liveLoops;
  }

  link(id: string): PeerLink | undefined {
    return this.entries.get(id)?.link;
  }

  /** The member's delivery loop; undefined for a dead or unknown member. */
  loop(id: string): DeliveryLoop | undefined {
    return this.entries.get(id)?.loop;
  }

  reader(id: string): ReadBatcher | undefined {
    return this.entries.get(id)?.reader;
  }

  /** Calls `listener` with every delivery loop, now and as members are added (metrics observers). */
  onLoop(listener: (loop: DeliveryLoop) => void): void {
    this.loopListeners.push(listener);
    for (const loop of this.liveLoops) listener(loop);
  }

  /** Starts every loop (and, from now on, those of members added later). */
  start(): void {
    this.started = true;
    for (const loop of this.liveLoops) loop.start();
  }

  async stop(): Promise<void> {
    this.started = false;
    await this.syncing.catch(() => {});
    await Promise.all(this.liveLoops.map((l) => l.stop()));
  }

  close(): void {
    for (const e of this.entries.values()) e.link.close();
  }

  /** Brings the peers in line with `state`. Serialized: a second sync waits for the first. */
  sync(state: MembershipState): Promise<void> {
    const run = this.syncing.then(() => this.syncNow(state));
    this.syncing = run.catch(() => {});
    return run;
  }

  private async syncNow(state: MembershipState): Promise<void> {
    const wanted = new Map(state.members.filter((m) => m.id !== this.selfId && m.state !== 'removed').map((m) => [m.id, m]));
    // This node declared dead or removed: it delivers nothing more (its peers would refuse it:
    // fenced) and keeps its log as it is, for an operator to look at before wiping the node.
    const self = state.members.find((m) => m.id === this.selfId);
    const selfGone = self !== undefined && (self.dead === true || self.state === 'removed');
    for (const [id, entry] of [...this.entries]) {
      const member = wanted.get(id);
      if (member !== undefined && this.factory.dialAddress(id, member.peer) === entry.link.address) continue;
      // Removed, or moved to another address: stop and close; a moved member gets a new entry below.
      await entry.loop?.stop();
      entry.link.close();
      this.entries.delete(id);
      if (member === undefined) await this.dropQueue(id, 'removed');
    }
    for (const [id, member] of wanted) {
      let entry = this.entries.get(id);
      if (entry === undefined) {
        const link = this.factory.link(id, this.factory.dialAddress(id, member.peer));
        entry = { link, reader: this.factory.reader(link), loop: undefined };
        this.entries.set(id, entry);
      }
      if (member.dead === true || selfGone) {
        if (entry.loop !== undefined) {
          await entry.loop.stop();
          entry.loop = undefined;
        }
        if (member.dead === true) await this.dropQueue(id, 'declared dead');
      } else if (entry.loop === undefined) {
        this.hints.addPeer(id);
        entry.loop = this.factory.loop(entry.link);
        for (const listener of this.loopListeners) listener(entry.loop);
        if (this.started) entry.loop.start();
      }
    }
    // Queues of members that are gone (found in the log at open, e.g. after a crash mid-change):
    // nothing will deliver them, and they would hold tombstone GC back.
    for (const id of this.hints.peers()) {
      if (wanted.get(id) === undefined && !selfGone) await this.dropQueue(id, 'not a member');
    }
    const ordered = [...this.entries.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
    this.allLinks = ordered.map((e) => e.link);
    this.liveLinks = ordered.filter((e) => e.loop !== undefined).map((e) => e.link);
    this.liveLoops = ordered.flatMap((e) => (e.loop === undefined ? [] : [e.loop]));
  }

  /** Deletes a member's replication-log queue: nothing in it can be delivered any more. */
  private async dropQueue(id: string, why: string): Promise<void> {
    if (!this.hints.peers().includes(id)) return;
    const dropped = await this.hints.removePeer(id);
    if (dropped > 0) this.logger.warn({ peer: id, dropped }, `replication-log entries for ${id} dropped: it was ${why} (the other replicas hold what was acknowledged)`);
  }
}
