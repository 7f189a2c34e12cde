import { type Clock, nextTurn, systemClock, type TimerHandle } from '../platform/clock.js';
import type { Database } from 'lmdb';
import { nodeIdBytesMax } from './record-codec.js';

/**
 * The replication log (hinted handoff): for each peer, an ordered queue of records that peer
 * must still receive. A write's entries are reserved first (sequence numbers, and readable by the
 * delivery loops at once, so peers receive the write while this node commits it), then written
 * inside the same LMDB write transaction as the local apply (see Repository.commitWrite): a write
 * acknowledged to a client is in the log for every other replica, and survives a crash of this
 * process. If that transaction fails, its entries are discarded; one may already have reached a
 * peer. The client then gets an error, an indeterminate outcome like a timeout, and LWW plus
 * anti-entropy converge the replicas either way.
 *
 * LMDB key:   peer id (latin1) | 0x00 | sequence (uint64 big-endian)  -> each peer's entries in order
 * LMDB value: enqueued-at ms (uint48 BE) | key length (uint16 BE) | key | encoded record
 */

const seqBytes = 8;
const entryHeaderBytes = 8;

export interface HintEntry {
  readonly peer: string;
  readonly seq: number;
  readonly enqueuedAtMs: number;
  readonly key: Buffer;
  readonly record: Buffer;
  /** Bytes the entry occupies in the log (key + value), for backlog accounting. */
  readonly bytes: number;
}

export interface BacklogStats {
  entries: number;
  bytes: number;
  /** Enqueue time of the oldest entry, or undefined when the backlog is empty. */
  oldestEnqueuedAtMs: number | undefined;
  /** Entries dropped because of hints limits since start. */
  dropped: number;
}

interface PeerQueue {
  readonly prefix: Buffer;
  /**
   * The newest committed entries, contiguous in sequence and ending at the newest committed one
   * (from `tailHead` on; earlier slots are delivered). Reads that start inside it are served from
   * memory instead of LMDB: the delivery loop mostly asks for what was committed a moment ago.
   * Emptied (and refilled by later appends) when it would exceed hintTailEntriesMax entries or
   * hintTailBytesMax bytes.
   */
  tail: HintEntry[];
  tailHead: number;
  /** Bytes of the entries from `tailHead` on (each entry's `bytes`), for hintTailBytesMax. */
  tailBytes: number;
  nextSeq: number;
  /** Entries up to this sequence are delivered (or dropped): logically gone, maybe not yet deleted. */
  goneThroughSeq: number;
  /**
   * Entries up to this sequence were written by a write transaction (this one or an earlier one):
   * deleting a reserved entry must wait until then, or the write would resurrect it.
   */
  writtenThroughSeq: number;
  entries: number;
  bytes: number;
  dropped: number;
  /**
   * Sequences of reserved entries whose transaction failed: already uncounted and never in LMDB,
   * so delivering or dropping them later changes no count.
   */
  readonly phantoms: Set<number>;
  /** Set by removePeer: entries reserved for it are no longer written, its pending deletes are dropped. */
  removed: boolean;
}

/** How long delivered entries may wait for a write transaction to delete them in. */
export const removalDelayMsMax = 20;
/** Most entries per peer kept in memory for delivery (a peer further behind is read from LMDB). */
export const hintTailEntriesMax = 8192;
/**
 * Most bytes of entries per peer kept in memory for delivery. The entry count alone let a peer
 * that is down pin 8,192 values in memory: 8 GiB of 1 MiB values.
 */
export const hintTailBytesMax = 64 * 1024 * 1024;
/** Entries removePeer deletes per transaction: a long queue never holds the write lock (or, simulated, this thread) long. */
export const hintRemovalBatchEntries = 1_000;

export class HintLog {
  private readonly queues = new Map<string, PeerQueue>();
  /** Delivered entries, deleted in the next write transaction (see `remove`). */
  private pendingRemovals: PendingRemoval[] = [];
  private removalTimer: TimerHandle | undefined;
  /** Peers whose entries removePeer is deleting: addPeer refuses them until it ends (it would count a half-deleted queue). */
  private readonly removing = new Set<string>();

  constructor(
    private readonly db: Database<Buffer, Buffer>,
    peers: readonly string[],
    private readonly clock: Clock = systemClock,
    /** Commit removals on this thread (the simulator: no worker thread may reach simulated time). */
    private readonly syncCommits = false,
  ) {
    for (const peer of peers) checkPeerId(peer);
    // Queues are also found from the log itself: entries for a peer added just before a crash
    // (not in `peers` yet) must still be counted and delivered. One pass: each queue's range is
    // read once, then the scan jumps past its end to the next peer's first key.
    const found = new Map<string, PeerQueue>();
    for (let start: Buffer | undefined; ; ) {
      let first: Buffer | undefined;
      for (const key of db.getKeys({ start, limit: 1 })) first = key;
      if (first === undefined) break;
      const separator = first.indexOf(0);
      if (separator <= 0) throw new Error(`replication log holds a malformed key ${first.toString('hex')}`);
      const peer = first.toString('latin1', 0, separator);
      checkPeerId(peer);
      const queue = this.loadQueue(prefixOf(peer));
      found.set(peer, queue);
      start = prefixEndOf(queue.prefix);
    }
    for (const peer of peers) this.queues.set(peer, found.get(peer) ?? newQueue(prefixOf(peer)));
    for (const [peer, queue] of found) if (!this.queues.has(peer)) this.queues.set(peer, queue);
  }

  /** The peers with a queue: those given at construction, those found in the log, and added ones. */
  peers(): string[] {
    return [...this.queues.keys()];
  }

  /** Gives a new peer an (empty) queue; a peer that has one keeps it unchanged. */
  addPeer(peer: string): void {
    checkPeerId(peer);
    if (this.queues.has(peer)) return;
    if (this.removing.has(peer)) throw new Error(`replication log for peer "${peer}" is still being removed`);
    // Read, not assumed empty: whatever LMDB holds under the prefix is counted, never overwritten.
    this.queues.set(peer, this.loadQueue(prefixOf(peer)));
  }

  /**
   * Forgets `peer`'s queue at once, then deletes its entries from LMDB in transactions of
   * hintRemovalBatchEntries; resolves with how many it deleted. Forgotten first so that nothing
   * sees a half-deleted queue: from the call on the peer is unknown (reserve, read, remove, stats
   * throw; oldestEnqueuedAtMs leaves it out; addPeer refuses it until the deletion ends). The
   * caller stops enqueueing for the peer and stops its delivery loop first. A write that reserved
   * entries for it before the call and commits later still commits for its other peers, but its
   * entry for this peer is not written, so nothing comes back under the prefix; delivered entries
   * awaiting deletion are left to this deletion. If a transaction fails, the peer gets a queue of
   * what is left (read from LMDB, so still counted) and the call rejects: call it again.
   */
  async removePeer(peer: string): Promise<number> {
    const queue = this.queue(peer);
    queue.removed = true;
    this.queues.delete(peer);
    // Dropped now; drainRemovalsInTransaction skips any requeued after a failed drain.
    this.pendingRemovals = this.pendingRemovals.filter((r) => r.queue !== queue);
    this.removing.add(peer);
    const end = prefixEndOf(queue.prefix);
    const deleteBatch = (): number => {
      // Collected first: deleting under an open cursor is not something to rely on.
      const keys = [...this.db.getKeys({ start: queue.prefix, end, limit: hintRemovalBatchEntries })];
      for (const key of keys) this.db.removeSync(key);
      return keys.length;
    };
    let deleted = 0;
    try {
      for (;;) {
        const count = this.syncCommits ? this.db.transactionSync(deleteBatch) : await this.db.transaction(deleteBatch);
        deleted += count;
        if (count < hintRemovalBatchEntries) return deleted;
        // Simulated commits are synchronous: let other work in between, as the write thread does.
        if (this.syncCommits) await nextTurn(this.clock);
      }
    } catch (err) {
      try {
        // What is left stays counted (stats, the log floor of oldestEnqueuedAtMs) until a retry.
        this.queues.set(peer, { ...this.loadQueue(queue.prefix), dropped: queue.dropped });
      } catch {
        // The environment is gone (a crash): the next open finds what is left.
      }
      throw err;
    } finally {
      this.removing.delete(peer);
    }
  }

  /**
   * Reserves the next entry of each of `peers` for one write (one encoded value shared by all),
   * readable by `read` at once. The caller must then write them with writeReservedInTransaction,
   * or discardReserved them if that transaction fails.
   */
  reserve(peers: readonly string[], key: Uint8Array, record: Uint8Array, nowMs: number): ReservedEntries {
    const value = entryValue(key, record, nowMs);
    // Every peer is looked up before any queue changes: an unknown one must not leave the others
    // with reserved entries that nothing writes or discards.
    const queues = peers.map((peer) => this.queue(peer));
    const entries = peers.map((peer, i): HintEntry => {
      const queue = queues[i]!;
      const seq = queue.nextSeq++;
      const bytes = queue.prefix.length + seqBytes + value.length;
      queue.entries++;
      queue.bytes += bytes;
      const entry = { peer, seq, enqueuedAtMs: nowMs, key: value.subarray(entryHeaderBytes, entryHeaderBytes + key.length), record: value.subarray(entryHeaderBytes + key.length), bytes };
      const last = queue.tail[queue.tail.length - 1];
      if (
        queue.tail.length - queue.tailHead >= hintTailEntriesMax ||
        queue.tailBytes + bytes > hintTailBytesMax ||
        (last !== undefined && last.seq + 1 !== seq)
      ) {
        // The peer is far behind (or a failed transaction left a gap): it reads from LMDB until
        // it reaches the entries reserved from now on.
        resetTail(queue);
      }
      queue.tail.push(entry);
      queue.tailBytes += bytes;
      return entry;
    });
    const reserved = { entries, value };
    reservedQueues.set(reserved, queues);
    return reserved;
  }

  /**
   * Writes reserved entries to LMDB. Must run inside a write transaction. Entries of a queue
   * removed since (removePeer) are skipped: its deletion may have passed their keys already, and
   * a peer added again under the same id has a new queue with its own sequences.
   */
  writeReservedInTransaction(reserved: ReservedEntries): void {
    const queues = queuesOf(reserved);
    reserved.entries.forEach(({ seq }, i) => {
      const queue = queues[i]!;
      if (queue.removed) return;
      this.db.putSync(logKeyOf(queue.prefix, seq), reserved.value);
      queue.writtenThroughSeq = Math.max(queue.writtenThroughSeq, seq);
    });
  }

  /**
   * The transaction that was to write `reserved` failed: the entries never existed. Their
   * sequences are not reused; one may already be on its way to a peer (see the top).
   */
  discardReserved(reserved: ReservedEntries): void {
    const queues = queuesOf(reserved);
    for (const [i, entry] of reserved.entries.entries()) {
      const queue = queues[i]!;
      if (queue.removed) continue; // nothing left to account for
      // Later reads go to LMDB, which never held these entries.
      resetTail(queue);
      if (entry.seq <= queue.goneThroughSeq) continue; // delivered or dropped already: uncounted
      queue.entries--;
      queue.bytes -= entry.bytes;
      queue.phantoms.add(entry.seq);
    }
  }

  /** Up to `maxEntries` entries (and about `maxBytes`) for `peer` with sequence > afterSeq, in order. */
  read(peer: string, afterSeq: number, maxEntries: number, maxBytes: number): HintEntry[] {
    const queue = this.queue(peer);
    const out: HintEntry[] = [];
    let bytes = 0;
    const from = Math.max(afterSeq, queue.goneThroughSeq) + 1;
    const { tail, tailHead } = queue;
    if (tailHead < tail.length && tail[tailHead]!.seq <= from) {
      // Served from memory: the tail ends at the newest committed entry.
      for (let i = tailHead + (from - tail[tailHead]!.seq); i < tail.length && out.length < maxEntries; i++) {
        const entry = tail[i]!;
        if (out.length > 0 && bytes + entry.bytes > maxBytes) break;
        out.push(entry);
        bytes += entry.bytes;
      }
      return out;
    }
    const range = this.db.getRange({ start: logKeyOf(queue.prefix, from), end: prefixEndOf(queue.prefix), limit: maxEntries });
    for (const { key, value } of range) {
      const entry = decodeEntry(peer, key, value);
      if (out.length > 0 && bytes + entry.bytes > maxBytes) break;
      out.push(entry);
      bytes += entry.bytes;
    }
    return out;
  }

  /**
   * Marks delivered (or dropped) entries, which must be the oldest of their peer's queue, as gone,
   * and deletes them in the next write transaction (any repository write drains them, or a timer
   * after removalDelayMsMax). A separate fsynced transaction per delivered batch was a large share
   * of commits; a crash before the delete only means redelivery, which LWW makes harmless.
   */
  remove(entries: readonly HintEntry[], dropped = false): void {
    if (entries.length === 0) return;
    const queue = this.queue(entries[0]!.peer);
    for (const e of entries) {
      if (e.seq <= queue.goneThroughSeq) continue;
      queue.goneThroughSeq = e.seq;
      if (queue.phantoms.delete(e.seq)) continue;
      queue.entries--;
      queue.bytes -= e.bytes;
      if (dropped) queue.dropped++;
      this.pendingRemovals.push({ queue, seq: e.seq });
    }
    // Phantoms passed over (never read back from LMDB) are behind the queue now.
    for (const seq of queue.phantoms) if (seq <= queue.goneThroughSeq) queue.phantoms.delete(seq);
    while (queue.tailHead < queue.tail.length && queue.tail[queue.tailHead]!.seq <= queue.goneThroughSeq) {
      queue.tailBytes -= queue.tail[queue.tailHead]!.bytes;
      queue.tailHead++;
    }
    if (queue.tailHead === queue.tail.length) {
      resetTail(queue);
    } else if (queue.tailHead >= hintTailEntriesMax) {
      queue.tail = queue.tail.slice(queue.tailHead);
      queue.tailHead = 0;
    }
    this.removalTimer ??= this.clock.setTimer(() => {
      this.removalTimer = undefined;
      if (this.pendingRemovals.length === 0) return;
      let drained = noRemovals;
      if (this.syncCommits) {
        try {
          this.db.transactionSync(() => (drained = this.drainRemovalsInTransaction()));
        } catch {
          this.requeueRemovals(drained);
        }
        return;
      }
      this.db.transaction(() => (drained = this.drainRemovalsInTransaction())).catch(() => this.requeueRemovals(drained));
    }, removalDelayMsMax);
  }

  /** Whether an entry was delivered or dropped already (e.g. by the log's limits while in flight). */
  isGone(peer: string, seq: number): boolean {
    return seq <= this.queue(peer).goneThroughSeq;
  }

  /**
   * Deletes entries marked gone, except reserved ones no transaction has written yet (delivered
   * before their commit): those wait for a later drain. Must run inside a write transaction;
   * returns what it deleted, for requeueRemovals if that transaction fails.
   */
  drainRemovalsInTransaction(): DrainedRemovals {
    const removals = this.pendingRemovals;
    if (removals.length === 0) return noRemovals;
    this.pendingRemovals = [];
    const drained: PendingRemoval[] = [];
    for (const removal of removals) {
      // A removed queue's entries are removePeer's to delete (and one requeued after a failed
      // drain could otherwise wait for ever for a write that never comes).
      if (removal.queue.removed) continue;
      if (removal.seq <= removal.queue.writtenThroughSeq) {
        this.db.removeSync(logKeyOf(removal.queue.prefix, removal.seq));
        drained.push(removal);
      } else {
        this.pendingRemovals.push(removal);
      }
    }
    return drained;
  }

  /** The transaction that drained `drained` failed: delete them in a later one. */
  requeueRemovals(drained: DrainedRemovals): void {
    if (drained.length > 0) this.pendingRemovals.push(...(drained as PendingRemoval[]));
  }

  /** A simulated crash: the pending deletes are lost (their entries stay in LMDB and are sent again). */
  abandonRemovals(): void {
    this.removalTimer?.cancel();
    this.removalTimer = undefined;
    this.pendingRemovals = [];
  }

  /** Stops the removal timer (on close, after a last drain by the caller's transaction). */
  async flushRemovals(): Promise<void> {
    this.removalTimer?.cancel();
    this.removalTimer = undefined;
    if (this.pendingRemovals.length === 0) return;
    if (this.syncCommits) this.db.transactionSync(() => this.drainRemovalsInTransaction());
    else await this.db.transaction(() => this.drainRemovalsInTransaction());
  }

  /** Enqueue time of the oldest entry in any peer's queue, or undefined when every queue is empty. */
  oldestEnqueuedAtMs(): number | undefined {
    let oldest: number | undefined;
    for (const peer of this.queues.keys()) {
      const at = this.stats(peer).oldestEnqueuedAtMs;
      if (at !== undefined && (oldest === undefined || at < oldest)) oldest = at;
    }
    return oldest;
  }

  /** The oldest entry for `peer`, if any. */
  oldest(peer: string): HintEntry | undefined {
    return this.read(peer, 0, 1, Number.MAX_SAFE_INTEGER)[0];
  }

  stats(peer: string): BacklogStats {
    const queue = this.queue(peer);
    const oldest = queue.entries > 0 ? this.oldest(peer) : undefined;
    return { entries: queue.entries, bytes: queue.bytes, oldestEnqueuedAtMs: oldest?.enqueuedAtMs, dropped: queue.dropped };
  }

  /** A queue of what LMDB holds under `prefix` (read once, in order). */
  private loadQueue(prefix: Buffer): PeerQueue {
    const queue = newQueue(prefix);
    for (const { key, value } of this.db.getRange({ start: prefix, end: prefixEndOf(prefix) })) {
      queue.entries++;
      queue.bytes += key.length + value.length;
      queue.nextSeq = seqOf(key) + 1;
    }
    queue.writtenThroughSeq = queue.nextSeq - 1;
    return queue;
  }

  private queue(peer: string): PeerQueue {
    const queue = this.queues.get(peer);
    if (queue === undefined) throw new Error(`no replication log for unknown peer "${peer}"`);
    return queue;
  }
}

/** Entries reserved for one write (see HintLog.reserve): one per peer, sharing one LMDB value. */
export interface ReservedEntries {
  readonly entries: readonly HintEntry[];
  readonly value: Buffer;
}

/** Each reservation's queues, by entry: a peer removed and added again meanwhile has another queue. */
const reservedQueues = new WeakMap<ReservedEntries, readonly PeerQueue[]>();

function queuesOf(reserved: ReservedEntries): readonly PeerQueue[] {
  const queues = reservedQueues.get(reserved);
  if (queues === undefined) throw new Error('these entries were not reserved by HintLog.reserve');
  return queues;
}

interface PendingRemoval {
  readonly queue: PeerQueue;
  readonly seq: number;
}

/** Removals one transaction performed (opaque to callers). */
export type DrainedRemovals = readonly unknown[];
export const noRemovals: DrainedRemovals = [];

/** An entry's LMDB value: enqueued-at ms | key length | key | encoded record (see the top). */
function entryValue(key: Uint8Array, record: Uint8Array, nowMs: number): Buffer {
  const value = Buffer.allocUnsafe(entryHeaderBytes + key.length + record.length);
  value.writeUIntBE(nowMs, 0, 6);
  value.writeUInt16BE(key.length, 6);
  value.set(key, entryHeaderBytes);
  value.set(record, entryHeaderBytes + key.length);
  return value;
}

/**
 * Peer ids become key prefixes (latin1, then 0x00): each character must be one byte and not 0x00,
 * or two ids could share a prefix, and one found in the log could not be read back.
 */
function checkPeerId(peer: string): void {
  if (peer.length === 0 || peer.length > nodeIdBytesMax || !/^[\x01-\xff]+$/.test(peer)) throw new Error(`bad peer id "${peer}"`);
}

function prefixOf(peer: string): Buffer {
  return Buffer.concat([Buffer.from(peer, 'latin1'), Buffer.from([0])]);
}

function newQueue(prefix: Buffer): PeerQueue {
  return { prefix, tail: [], tailHead: 0, tailBytes: 0, nextSeq: 1, goneThroughSeq: 0, writtenThroughSeq: 0, entries: 0, bytes: 0, dropped: 0, phantoms: new Set(), removed: false };
}

function logKeyOf(prefix: Buffer, seq: number): Buffer {
  const key = Buffer.allocUnsafe(prefix.length + seqBytes);
  prefix.copy(key, 0);
  key.writeUInt32BE(Math.floor(seq / 2 ** 32), prefix.length);
  key.writeUInt32BE(seq >>> 0, prefix.length + 4);
  return key;
}

function seqOf(logKey: Buffer): number {
  const at = logKey.length - seqBytes;
  return logKey.readUInt32BE(at) * 2 ** 32 + logKey.readUInt32BE(at + 4);
}

function prefixEndOf(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] = 1; // prefix ends with 0x00 separator
  return end;
}

function decodeEntry(peer: string, logKey: Buffer, value: Buffer): HintEntry {
  const keyLength = value.readUInt16BE(6);
  return {
    peer,
    seq: seqOf(logKey),
    enqueuedAtMs: value.readUIntBE(0, 6),
    key: value.subarray(entryHeaderBytes, entryHeaderBytes + keyLength),
    record: value.subarray(entryHeaderBytes + keyLength),
    bytes: logKey.length + value.length,
  };
}

/** Empties a peer's in-memory tail: its reads go to LMDB until they reach entries appended later. */
function resetTail(queue: PeerQueue): void {
  queue.tail = [];
  queue.tailHead = 0;
  queue.tailBytes = 0;
}
