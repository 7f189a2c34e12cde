import type { Clock } from '../platform/clock.js';
import type { Logger } from 'pino';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { type ConsistencyLevel, requiredAcks } from '../cluster/quorum.js';
import { writeSetsSatisfied } from '../cluster/ring-view.js';
import { decodeRecordHeader, encodeRecord, isTombstoneRecord, recordValue, recordWallMs } from '../storage/record-codec.js';
import { compareRecords, newerRecord } from '../storage/merge-rule.js';
import { recordHeader, type Repository, type StoredRecord } from '../storage/repository.js';
import type { RequestDeadline } from './deadline.js';
import type { DeliveryLoop, DeliveryOutcome } from './delivery-loop.js';
import { NotEnoughReplicasError, ShuttingDownError } from './errors.js';
import type { LiveMembership } from './live-membership.js';
import type { PeerDirectory } from './peer-directory.js';


/** Keys fetched per node per page while merging a cluster-wide listing. */
export const listPageRecords = 1000;
/** Smallest page of a listing with a limit: a few deletes among the first keys cost no extra round trip. */
export const listPageRecordsMin = 16;

export interface CoordinatorSettings {
  readonly selfId: string;
  readonly replicationFactor: number;
  readonly peerCallMs: number;
  /** tombstones.graceSeconds: a local read repair follows the peers' rule for old records (below). */
  readonly graceSeconds: number;
  /** Throws if this node must not serve. */
  readonly assertServing: () => void;
}

/** The result of a read, or the value a write replaced. */
export interface ReadResult {
  readonly found: boolean;
  readonly value: Buffer | undefined;
}

interface ReplicaAnswer {
  readonly node: string;
  readonly record: Buffer | undefined;
}

/** Metrics the coordinator keeps for Status and logs. */
export interface CoordinatorCounters {
  readRepairs: number;
  /** Write rounds repeated because a replica held a newer version than the one stamped. */
  restampedWrites: number;
}

/**
 * Most rounds one write may take (see Coordinator.write). A round is repeated only when a replica
 * answers a newer version, which a concurrent write to the same key can do again; past this
 * many the write answers UNAVAILABLE (it is in the log, an indeterminate outcome).
 */
export const writeRoundsMax = 8;

/**
 * How a write wakes its peers' delivery loops: `now` (the default) before its own commit, so a
 * group of writes that arrived together (one OperationStream message, one Batch) goes out as one
 * replication message while this node's commit runs; `after-turn`, once per event-loop turn for
 * every write that asked in it, for writes that arrive one call at a time (unary Put and
 * Delete). Measured both ways in BENCHMARKS.md ("Waking replication after the turn").
 */
export type ReplicationWake = 'now' | 'after-turn';

/** Where one write goes and how many replicas must apply it. */
interface WritePlan {
  readonly key: Buffer;
  readonly wake: ReplicationWake;
  /**
   * The replica sets that must each have `required` members apply the write: one outside a
   * membership change, the old and the new ring's during one (the dual quorum, docs/membership.md §3).
   */
  readonly sets: readonly (readonly string[])[];
  /** Every member of the sets. */
  readonly replicas: readonly string[];
  /** The replicas other than this node. */
  readonly peers: readonly string[];
  readonly selfIsReplica: boolean;
  /** Replicas declared dead: they count as failed from the start (nothing is sent to them). */
  readonly dead: readonly string[];
  readonly required: number;
  readonly level: ConsistencyLevel;
}

/** What one round of a write achieved. */
/** What a write's rounds share: per replica, what it held before this write's first record it applied; every tracked entry. */
interface WriteRoundsState {
  readonly learned: Map<string, Buffer | undefined>;
  readonly tracked: { readonly loop: DeliveryLoop; readonly seq: number }[];
}

interface RoundOutcome {
  /** Enough replicas applied the round's record. */
  readonly acked: boolean;
  readonly applied: number;
  /** Newest record a replica held before (not one of this write's own rounds). */
  readonly previous: Buffer | undefined;
  /** Newest record a replica held that is newer than the round's: the next round's floor. */
  readonly superseding: Buffer | undefined;
}

/** Whether `record` is one this write stamped in an earlier round (a replica already applied it). */
function isOwn(record: Buffer, ownRecords: readonly Buffer[]): boolean {
  for (const own of ownRecords) if (own.equals(record)) return true;
  return false;
}

/**
 * Coordinates client requests for any key: finds the key's replicas on the ring, writes through
 * the local store and the replication log, waits for the requested number of replicas, reads
 * from enough replicas to answer with the newest version, and repairs stale replicas it read.
 */
export class Coordinator {
  readonly counters: CoordinatorCounters = { readRepairs: 0, restampedWrites: 0 };
  private closed = false;
  /** The loops {@link wakeAfterTurn} wakes at the end of this turn. */
  private readonly loopsToWake = new Set<DeliveryLoop>();

  constructor(
    private readonly settings: CoordinatorSettings,
    /** The ring, read per request: a committed membership change applies to the next one. */
    private readonly membership: LiveMembership,
    private readonly repo: Repository,
    private readonly clock: HybridLogicalClock,
    private readonly peers: PeerDirectory,
    private readonly logger: Logger,
    /** Timers and this node's wall time (shifted by the clock test hook, or simulated); the HLC is `clock`. */
    private readonly time: Clock,
  ) {}

  /** Stops taking new requests (in-flight ones finish). */
  close(): void {
    this.closed = true;
  }

  /**
   * Writes `value` (or a tombstone) and answers the newest previous value among the
   * acknowledging replicas.
   *
   * A write is acknowledged only once `level`'s number of replicas have *applied* it: stored it
   * as their newest record. A replica holding a newer version (a node with a fast clock wrote the
   * key; this node's clock is behind its peers') says so by answering that record as its previous
   * one, and the write is then stamped again above it and sent again, in a new round. So an
   * acknowledged QUORUM or ALL write is higher than every write acknowledged before it was sent
   * (their quorums share a replica, which held the earlier write), whatever the clocks say.
   */
  async write(key: Buffer, value: Buffer, tombstone: boolean, level: ConsistencyLevel, deadline: RequestDeadline, wake: ReplicationWake = 'now'): Promise<ReadResult> {
    if (this.closed) throw new ShuttingDownError('node is shutting down; retry on another node');
    this.settings.assertServing();
    const { selfId, replicationFactor } = this.settings;
    const view = this.membership.view();
    const sets = view.writeSets(key);
    const replicas = sets.length === 1 ? sets[0]! : [...new Set(sets.flat())];
    const selfIsReplica = replicas.includes(selfId);
    const others = selfIsReplica ? replicas.filter((id) => id !== selfId) : replicas;
    const plan: WritePlan = {
      key,
      sets,
      replicas,
      peers: others.filter((id) => this.peers.loop(id) !== undefined),
      dead: others.filter((id) => this.peers.loop(id) === undefined),
      selfIsReplica,
      required: requiredAcks(level, replicationFactor),
      level,
      wake,
    };
    // Counted until answered, by the epoch it was planned at: the drain barrier of a change.
    const finished = this.membership.beginWrite();
    try {
      return await this.writeRounds(plan, value, tombstone, deadline);
    } finally {
      finished();
    }
  }

  private async writeRounds(plan: WritePlan, value: Buffer, tombstone: boolean, deadline: RequestDeadline): Promise<ReadResult> {
    const { key, selfIsReplica, level } = plan;
    // Our own copy is the first floor: most writes need one round.
    let floor = selfIsReplica ? this.repo.getRecordHeader(key) : undefined;
    const ownRecords: Buffer[] = [];
    let previous: Buffer | undefined;
    const rounds: WriteRoundsState = { learned: new Map(), tracked: [] };
    try {
      return await this.runRounds(plan, value, tombstone, deadline, floor, ownRecords, previous, rounds);
    } finally {
      for (const t of rounds.tracked) t.loop.untrack(t.seq);
    }
  }

  private async runRounds(plan: WritePlan, value: Buffer, tombstone: boolean, deadline: RequestDeadline, floor: Buffer | undefined, ownRecords: Buffer[], previous: Buffer | undefined, rounds: WriteRoundsState): Promise<ReadResult> {
    const { level } = plan;
    for (let round = 1; ; round++) {
      const version = this.clock.nowAbove(floor === undefined ? undefined : decodeRecordHeader(floor).version);
      const record = encodeRecord({ version, tombstone, value });
      ownRecords.push(record);
      // A log entry's enqueue time is never above its record's version: the tombstone purge
      // relies on it (a tombstone older than every queued entry supersedes none of them).
      const outcome = await this.writeRound(plan, record, Math.min(this.time.wallMs(), version.wallMs), ownRecords, previous, rounds, deadline);
      previous = newerRecord(previous, outcome.previous);
      if (outcome.acked) return toReadResult(previous);
      if (round >= writeRoundsMax) {
        throw new NotEnoughReplicasError(
          `write reached ${outcome.applied} of the ${plan.required} replicas required at ${level.toUpperCase()} in ${round} rounds: ` +
            'replicas kept answering newer versions (concurrent writes to this key); it is stored in the replication log and will still reach every replica',
        );
      }
      this.counters.restampedWrites++;
      floor = outcome.superseding;
    }
  }

  /**
   * One round of a write: commits `record` locally (when a replica) with one replication-log
   * entry per other replica, and waits until enough replicas applied it, or until that is out of
   * reach. Resolves with acked = false and the newest superseding record when some replica held
   * a newer version (the caller stamps above it); throws when the replicas are unreachable.
   */
  private async writeRound(plan: WritePlan, record: Buffer, enqueuedAtMs: number, ownRecords: readonly Buffer[], previousSoFar: Buffer | undefined, rounds: WriteRoundsState, deadline: RequestDeadline): Promise<RoundOutcome> {
    const { key, peers, selfIsReplica, required, level, sets } = plan;
    const selfId = this.settings.selfId;
    // Whether this node's own copy alone could satisfy every set (ONE, with this node a replica of each).
    const waitForPeers = !sets.every((set) => (selfIsReplica && set.includes(selfId) ? 1 : 0) >= required);
    // Reserved before the commit and readable by the delivery loops at once, so peers apply the
    // write while this node commits and fsyncs it. The client is answered only after our flush
    // and W durable acks, so the overlap changes no guarantee.
    const reserved = peers.length > 0 ? this.repo.hints.reserve(peers, key, record, enqueuedAtMs) : undefined;
    const tracked: { loop: DeliveryLoop; seq: number; outcome: Promise<DeliveryOutcome> }[] = [];
    if (reserved !== undefined) {
      // Registered before the loops are woken, so none can deliver an entry unseen. A peer sends
      // back its old record only if newer than the one we hold (usually it is not). Tracked even
      // when no peer ack is needed: a peer may be the only one to tell us it holds a newer version.
      // It must be a record some replica could have held before this write: after a first round,
      // our own copy is that round's record, and a replica holding an older real value would then
      // answer nothing, so the put would answer a stale old value (found by the simulator, seed
      // 7143 --nodes 5). So: our copy unless it is our own, or the old value found so far.
      const local = selfIsReplica ? this.repo.getRecordHeader(key) : undefined;
      const ownCopy = local !== undefined && ownRecords.some((own) => recordHeader(own).equals(local));
      const knownPrevious = newerRecord(ownCopy ? undefined : local, previousSoFar === undefined ? undefined : Buffer.from(recordHeader(previousSoFar)));
      if (waitForPeers) {
        for (const { peer, seq } of reserved.entries) {
          const loop = this.peers.loop(peer)!;
          tracked.push({ loop, seq, outcome: loop.track(seq, knownPrevious) });
          // Kept until the whole write ends (not this round): a replica that applies this
          // round's entry only later, just before a later round's, answers what it really held
          // here, and the later round sees our own record there instead (see `consider`).
          rounds.tracked.push({ loop, seq });
        }
      }
    }
    if (plan.wake === 'now') for (const peer of peers) this.peers.loop(peer)?.wake();
    else this.wakeAfterTurn(peers);
    let committed: Awaited<ReturnType<Repository['commitWrite']>>;
    try {
      committed = await this.repo.commitWrite(key, record, selfIsReplica, reserved);
    } catch (err) {
      for (const t of tracked) t.loop.untrack(t.seq); // the entries were discarded
      throw err;
    }
    // A loop that had to read from LMDB (far behind) finds the entries only now.
    for (const peer of peers) this.peers.loop(peer)?.wake();

    const appliedBy = new Set<string>();
    const failedBy = new Set<string>(plan.dead);
    const acked = () => writeSetsSatisfied(sets, appliedBy, required);
    // Every set can still get `required` applications from members that have not failed.
    const reachable = () => sets.every((set) => set.filter((id) => !failedBy.has(id)).length >= required);
    let superseding: Buffer | undefined;
    let previous: Buffer | undefined;
    /**
     * Takes in what one replica held before `record`; false if it held something newer, or if
     * it applied `record` over an old value it could not send back (too large for its answer:
     * the write then does not count that replica, rather than answer a wrong old value).
     */
    const consider = (node: string, before: Buffer | undefined, valueOmitted = false): boolean => {
      // The replica already held this very record: a redelivery after its acknowledgement was
      // lost (a broken stream). What it replaced there is unknown, so the replica does not count:
      // counting it could answer an old value older than one it held.
      if (before?.equals(record) === true) return false;
      const applied = before === undefined || compareRecords(valueOmitted ? recordHeader(record) : record, before) > 0;
      if (!applied) {
        superseding = newerRecord(superseding, before);
        return false;
      }
      if (before !== undefined && isOwn(before, ownRecords)) {
        // It held an earlier round's record of ours: what that one replaced there is what it
        // held before this write. Unknown until that entry's answer came: then it does not count.
        if (!rounds.learned.has(node)) return false;
        previous = newerRecord(previous, rounds.learned.get(node));
        return true;
      }
      if (valueOmitted) return false;
      rounds.learned.set(node, newerRecord(rounds.learned.get(node), before));
      if (before !== undefined) previous = newerRecord(previous, before);
      return true;
    };
    if (selfIsReplica) {
      if (consider(selfId, committed.previous)) appliedBy.add(selfId);
      else failedBy.add(selfId);
    }
    if (!waitForPeers) {
      return { acked: acked(), applied: appliedBy.size, previous, superseding: superseding ?? committed.previous };
    }

    const reasons: string[] = plan.dead.map((id) => `${id} is declared dead`);
    const describe = () =>
      `write reached ${appliedBy.size} of the ${required} replicas required at ${level.toUpperCase()}` +
      (sets.length > 1 ? ` in each of the old and the new replica sets (a membership change is in progress)` : '') +
      (reasons.length > 0 ? ` (${reasons.join('; ')})` : '') +
      '; it is stored in the replication log and will still reach every replica';
    // The entries stay tracked until the whole write ends (rounds.tracked).
    await deadline.race(
      new Promise<void>((resolve, reject) => {
        // Already decided before any peer answers: replicas declared dead count as failed.
        const settle = () => {
          if (acked()) resolve();
          else if (!reachable()) {
            if (superseding !== undefined) resolve();
            else reject(new NotEnoughReplicasError(describe()));
          }
        };
        settle();
        for (const t of tracked) {
          void t.outcome.then((o) => {
            const peer = t.loop.peerId;
            if (!o.delivered) {
              failedBy.add(peer);
              reasons.push(o.reason);
            } else if (consider(peer, o.previous, o.previousValueOmitted === true)) appliedBy.add(peer);
            else {
              failedBy.add(peer);
              reasons.push(
                o.previous?.equals(record) === true
                  ? `${t.loop.peerId} got the write twice (its first acknowledgement was lost), so the value it replaced is unknown`
                  : o.previousValueOmitted === true && compareRecords(recordHeader(record), o.previous!) > 0
                    ? `${t.loop.peerId} could not send back the old value (too large for one answer)`
                    : `${t.loop.peerId} holds a newer version`,
              );
            }
            if (acked()) resolve();
            else if (!reachable()) {
              if (superseding !== undefined) resolve();
              else reject(new NotEnoughReplicasError(describe()));
            }
          });
        }
        void settle;
      }),
      describe,
    );
    return { acked: acked(), applied: appliedBy.size, previous, superseding };
  }

  /** Reads `key` from enough replicas for `level` and answers the newest version. */
  async read(key: Buffer, level: ConsistencyLevel, deadline: RequestDeadline): Promise<ReadResult> {
    if (this.closed) throw new ShuttingDownError('node is shutting down; retry on another node');
    this.settings.assertServing();
    const { selfId, replicationFactor } = this.settings;
    const replicas = this.membership.ring().preferenceList(key, replicationFactor);
    const required = requiredAcks(level, replicationFactor);
    const answers: ReplicaAnswer[] = [];
    if (replicas.includes(selfId)) answers.push({ node: selfId, record: this.repo.getRecord(key) });
    if (answers.length < required) {
      // Reachable replicas first; dead ones are never asked (the read fails if it needs them).
      const reachable = (id: string) => Number(this.peers.link(id)!.reachable);
      const candidates = replicas.filter((id) => id !== selfId && this.peers.loop(id) !== undefined).sort((a, b) => reachable(b) - reachable(a));
      answers.push(...(await this.readFromPeers(key, candidates, answers.length, required, level, deadline)));
    }
    let newest: Buffer | undefined;
    for (const a of answers) newest = newerRecord(newest, a.record);
    if (newest !== undefined) {
      this.clock.observe(decodeRecordHeader(newest).version);
      if (answers.length > 1) this.repairStale(key, newest, answers);
    }
    return toReadResult(newest);
  }

  /**
   * Asks enough of `candidates` (in order, replacing failures with the next) for their record to
   * reach `required` answers together with the `have` local ones.
   */
  private readFromPeers(key: Buffer, candidates: readonly string[], have: number, required: number, level: ConsistencyLevel, deadline: RequestDeadline): Promise<ReplicaAnswer[]> {
    const need = required - have;
    const answers: ReplicaAnswer[] = [];
    const reasons: string[] = [];
    const describe = () =>
      `${have + answers.length} of the ${required} replicas required at ${level.toUpperCase()} answered` +
      (reasons.length > 0 ? ` (${reasons.join('; ')})` : '');
    let next = 0;
    let inFlight = 0;
    const work = new Promise<ReplicaAnswer[]>((resolve, reject) => {
      const launch = () => {
        if (next >= candidates.length) {
          if (inFlight === 0) reject(new NotEnoughReplicasError(`read failed: ${describe()}`));
          return;
        }
        const node = candidates[next++]!;
        inFlight++;
        this.peers.reader(node)!.read(key).then(
          (record) => {
            inFlight--;
            answers.push({ node, record });
            if (answers.length >= need) resolve(answers);
          },
          (err: Error) => {
            inFlight--;
            reasons.push(`${node}: ${err.message}`);
            launch();
          },
        );
      };
      for (let i = 0; i < need; i++) launch();
    });
    return deadline.race(work, () => `read deadline passed: ${describe()}`);
  }

  /**
   * Wakes the peers' delivery loops once, after this turn of the event loop (clock.defer), for
   * all the writes that asked in it: unary calls arrive one per callback, and a wake at once
   * sent each as its own replication message (BENCHMARKS.md, issue 17). An idle loop is woken at
   * once: a lone write has nothing to wait for, and a deferred send went out only after this
   * node's own commit (lmdb-js starts it in the same turn's immediates), one fsync later.
   */
  private wakeAfterTurn(peers: readonly string[]): void {
    const scheduled = this.loopsToWake.size > 0;
    for (const peer of peers) {
      const loop = this.peers.loop(peer);
      if (loop === undefined) continue;
      if (loop.idle) loop.wake();
      else this.loopsToWake.add(loop);
    }
    if (scheduled || this.loopsToWake.size === 0) return;
    this.time.defer(() => {
      for (const loop of this.loopsToWake) loop.wake();
      this.loopsToWake.clear();
    });
  }

  /** Read repair: sends the newest record to every replica that answered with an older one. */
  private repairStale(key: Buffer, newest: Buffer, answers: readonly ReplicaAnswer[]): void {
    for (const a of answers) {
      if (a.record !== undefined && compareRecords(a.record, newest) >= 0) continue;
      this.counters.readRepairs++;
      const batch: StoredRecord[] = [{ key, record: newest }];
      // Our own copy by the rule a peer applies to it (fromLog, replica.ts): a record older than
      // the grace for a key we do not hold is not stored. Otherwise a tombstone read from a
      // replica that GC had not reached yet would come back here, after the others purged it,
      // held by this node alone (CI, 2026-12-01: four such on n4, read through n4).
      const oldestAcceptedMs = this.time.wallMs() - this.settings.graceSeconds * 1000;
      const done =
        a.node === this.settings.selfId
          ? this.repo.applyRecords(batch, [], (_, record, stored) => (stored === undefined && recordWallMs(record) < oldestAcceptedMs ? 'older-than-grace' : undefined))
          : this.peers.link(a.node)!.client.replicate({ fromNodeId: this.settings.selfId, records: batch, wantPrevious: [], knownPrevious: [], fromLog: true }, { signal: this.time.timeoutSignal(this.settings.peerCallMs) });
      done.catch((err: Error) => this.logger.debug({ node: a.node, err: err.message }, 'read repair failed; anti-entropy will fix it'));
    }
  }

  /**
   * Live keys in ascending order, in batches: merges every reachable member's local scan (newest
   * version wins, tombstones dropped). Exact as long as fewer than replicationFactor members are
   * unreachable (then every key has at least one answering replica); otherwise UNAVAILABLE.
   */
  async *listKeys(prefix: Buffer, startAfter: Buffer, limit: number, signal: AbortSignal): AsyncGenerator<Buffer[]> {
    if (this.closed) throw new ShuttingDownError('node is shutting down; retry on another node');
    this.settings.assertServing();
    // A short listing reads short pages: a limit of 1 must not read 1,000 records per member.
    const pageRecords = limit > 0 ? Math.min(listPageRecords, Math.max(limit, listPageRecordsMin)) : listPageRecords;
    const live = this.peers.links();
    const sources = [this.settings.selfId, ...live.map((l) => l.id)].map((node) => new ScanSource(node, this.scanPage(node, prefix, pageRecords, signal), startAfter));
    // Dead members cannot answer: they count against the coverage from the start.
    const failedNodes: string[] = this.peers.everyLink().filter((l) => !live.includes(l)).map((l) => `${l.id}: declared dead`);
    if (failedNodes.length >= this.settings.replicationFactor) {
      throw new NotEnoughReplicasError(`listing needs all but ${this.settings.replicationFactor - 1} member(s) to answer; ${failedNodes.join('; ')}`);
    }
    let emitted = 0;
    while (limit === 0 || emitted < limit) {
      const batch: Buffer[] = [];
      while (batch.length < listPageRecords && (limit === 0 || emitted + batch.length < limit)) {
        // Fill every source's buffer, dropping failed ones while coverage allows.
        for (const s of sources) {
          if (s.failed || s.done || s.buffer.length > 0) continue;
          try {
            await s.fill();
          } catch (err) {
            s.failed = true;
            failedNodes.push(`${s.node}: ${(err as Error).message}`);
            if (failedNodes.length >= this.settings.replicationFactor) {
              throw new NotEnoughReplicasError(`listing needs all but ${this.settings.replicationFactor - 1} member(s) to answer; failed: ${failedNodes.join('; ')}`);
            }
          }
        }
        let min: Buffer | undefined;
        for (const s of sources) if (s.buffer.length > 0 && (min === undefined || Buffer.compare(s.buffer[0]!.key, min) < 0)) min = s.buffer[0]!.key;
        if (min === undefined) break;
        let newest: Buffer | undefined;
        for (const s of sources) {
          if (s.buffer.length > 0 && s.buffer[0]!.key.equals(min)) newest = newerRecord(newest, s.buffer.shift()!.record);
        }
        if (newest !== undefined && !isTombstoneRecord(newest)) batch.push(min);
      }
      if (batch.length === 0) return;
      emitted += batch.length;
      yield batch;
    }
  }

  private scanPage(node: string, prefix: Buffer, pageRecords: number, signal: AbortSignal): (after: Buffer) => Promise<{ records: StoredRecord[]; done: boolean }> {
    if (node === this.settings.selfId) {
      return async (after) => {
        const records = this.repo.scanHeaders(prefix, after, pageRecords);
        return { records, done: records.length < pageRecords };
      };
    }
    const link = this.peers.link(node)!;
    return async (after) => {
      const res = await link.client.scanLocal({ fromNodeId: this.settings.selfId, prefix, startAfter: after, limit: pageRecords }, { signal: AbortSignal.any([signal, this.time.timeoutSignal(this.settings.peerCallMs)]) });
      return { records: res.records, done: res.done };
    };
  }
}

/** One member's key stream for the listing merge, fetched a page at a time. */
class ScanSource {
  buffer: StoredRecord[] = [];
  done = false;
  failed = false;

  constructor(
    readonly node: string,
    private readonly page: (after: Buffer) => Promise<{ records: StoredRecord[]; done: boolean }>,
    private after: Buffer,
  ) {}

  async fill(): Promise<void> {
    const { records, done } = await this.page(this.after);
    this.buffer = records;
    this.done = done || records.length === 0;
    if (records.length > 0) this.after = records[records.length - 1]!.key;
  }
}

function toReadResult(record: Buffer | undefined): ReadResult {
  if (record === undefined || isTombstoneRecord(record)) return { found: false, value: undefined };
  return { found: true, value: recordValue(record) };
}
