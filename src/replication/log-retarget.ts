import type { RingView } from '../cluster/ring-view.js';
import type { Repository } from '../storage/repository.js';

/**
 * Re-targeting of replication-log entries when a membership change moves ranges
 * (docs/membership.md, "Replication-log entries of moving ranges"; issue 16 item 2).
 *
 * Every write appends an entry for each other replica to this node's log. An entry planned under
 * the old ring for a member that loses the key's range (a loser) would reach only the loser: the
 * gainer streams the range from the loser, and misses any write the loser had not received when
 * its stream passed the key. So once this node has drained the change's first epoch (no write
 * planned under the old ring alone is still running here, so no such entry can still be added),
 * every entry still queued for a loser of its key is copied to the key's gainers: appended to
 * their queues, or applied here when this node is one. Writes planned from the change's first
 * epoch on already go to both rings' replicas (the dual quorum), so they need nothing.
 *
 * The loser keeps its entries and applies them while it is still an owner; once the change is
 * over it turns them away (ReplicateResponse.not_replicated) rather than store a stray copy.
 * A copy delivered twice is harmless under last-writer-wins. Run again after a restart in the
 * same change (nothing records that it ran): duplicates again, nothing lost.
 */

/** Entries read from one peer's queue per page. */
export const retargetPageEntries = 1000;
/** Bytes of entries read per page (about). */
export const retargetPageBytes = 4 * 1024 * 1024;

export interface RetargetOutcome {
  /** Entries held for a loser of their key, looked at. */
  readonly entries: number;
  /** Copies appended to gainers' queues. */
  readonly copies: number;
  /** Copies applied locally (this node gains the key). */
  readonly applied: number;
}

/**
 * Copies every entry queued for a loser of its key to the key's gainers (see the module
 * comment). `view` is the change's view (phase pending); members in `dead` get no copies;
 * `wake` tells a peer's delivery loop of its new entries.
 */
export async function retargetLogEntries(repo: Repository, view: RingView, selfId: string, dead: ReadonlySet<string>, wake: (peer: string) => void): Promise<RetargetOutcome> {
  let entries = 0;
  let copies = 0;
  let applied = 0;
  if (view.phase === 'normal') return { entries, copies, applied };
  const hints = repo.hints;
  for (const peer of hints.peers()) {
    for (let afterSeq = 0; ; ) {
      let page;
      try {
        page = hints.read(peer, afterSeq, retargetPageEntries, retargetPageBytes);
      } catch {
        break; // the peer's queue was removed meanwhile (it was declared dead or removed)
      }
      if (page.length === 0) break;
      afterSeq = page[page.length - 1]!.seq;
      // Read per page, with no await before the reserves: a queue removed meanwhile is not reserved in.
      const queued = new Set(hints.peers());
      const commits: Promise<unknown>[] = [];
      const woken = new Set<string>();
      for (const entry of page) {
        const [before, after] = view.writeSets(entry.key);
        if (before === undefined || after === undefined || !before.includes(peer) || after.includes(peer)) continue;
        entries++;
        const gainers = after.filter((id) => !before.includes(id) && !dead.has(id) && (id === selfId || queued.has(id)));
        if (gainers.length === 0) continue;
        const others = gainers.filter((id) => id !== selfId);
        const local = others.length < gainers.length;
        const reserved = others.length > 0 ? hints.reserve(others, entry.key, entry.record, entry.enqueuedAtMs) : undefined;
        copies += others.length;
        for (const id of others) woken.add(id);
        if (local) applied++;
        commits.push(repo.commitWrite(Buffer.from(entry.key), Buffer.from(entry.record), local, reserved));
      }
      await Promise.all(commits);
      // Delivery loops sleep until told of new entries (as the coordinator tells them).
      for (const id of woken) wake(id);
    }
  }
  return { entries, copies, applied };
}
