import type { Logger } from 'pino';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { type ConsistencyLevel, canStillReach, requiredAcks } from '../cluster/quorum.js';
import type { Ring } from '../cluster/ring.js';
import { compareEncodedVersions, decodeRecordHeader, encodeRecord, isTombstoneRecord, recordValue } from '../storage/record-codec.js';
import { recordHeader, type Repository, type StoredRecord } from '../storage/repository.js';
import type { RequestDeadline } from './deadline.js';
import type { DeliveryLoop, DeliveryOutcome } from './delivery-loop.js';
import { NotEnoughReplicasError, ShuttingDownError } from './errors.js';
import type { PeerLink } from './peer-link.js';
import { ReadBatcher } from './read-batcher.js';


/** Keys fetched per node per page while merging a cluster-wide listing. */
export const listPageRecords = 1000;

export interface CoordinatorSettings {
  readonly selfId: string;
  readonly replicationFactor: number;
  readonly peerCallMs: number;
  /** Throws if this node must not serve (quarantined: see StaleNodeGuard). */
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
}

/**
 * Coordinates client requests for any key: finds the key's replicas on the ring, writes through
 * the local store and the replication log, waits for the requested number of replicas, reads
 * from enough replicas to answer with the newest version, and repairs stale replicas it read.
 */
export class Coordinator {
  readonly counters: CoordinatorCounters = { readRepairs: 0 };
  private closed = false;
  private readonly readers: ReadonlyMap<string, ReadBatcher>;

  constructor(
    private readonly settings: CoordinatorSettings,
    private readonly ring: Ring,
    private readonly repo: Repository,
    private readonly clock: HybridLogicalClock,
    private readonly links: ReadonlyMap<string, PeerLink>,
    private readonly loops: ReadonlyMap<string, DeliveryLoop>,
    private readonly logger: Logger,
  ) {
    this.readers = new Map([...links.values()].map((l) => [l.id, new ReadBatcher(l, settings.selfId, settings.peerCallMs)]));
  }

  /** Stops taking new requests (in-flight ones finish). */
  close(): void {
    this.closed = true;
  }

  /** Writes `value` (or a tombstone) and answers the newest previous value among the acknowledging replicas. */
  async write(key: Buffer, value: Buffer, tombstone: boolean, level: ConsistencyLevel, deadline: RequestDeadline): Promise<ReadResult> {
    if (this.closed) throw new ShuttingDownError('node is shutting down; retry on another node');
    this.settings.assertServing();
    const { selfId, replicationFactor } = this.settings;
    const replicas = this.ring.preferenceList(key, replicationFactor);
    const required = requiredAcks(level, replicationFactor);
    const selfIsReplica = replicas.includes(selfId);
    const peers = selfIsReplica ? replicas.filter((id) => id !== selfId) : replicas;
    const record = encodeRecord({ version: this.clock.now(), tombstone, value });
    const localAcks = selfIsReplica ? 1 : 0;
    const waitForPeers = required > localAcks;
    // Reserved before the commit and readable by the delivery loops at once, so peers apply the
    // write while this node commits and fsyncs it. The client is answered only after our flush
    // and W durable acks, so the overlap changes no guarantee.
    const reserved = peers.length > 0 ? this.repo.hints.reserve(peers, key, record, Date.now()) : undefined;
    const tracked: { loop: DeliveryLoop; seq: number; outcome: Promise<DeliveryOutcome> }[] = [];
    if (waitForPeers && reserved !== undefined) {
      // Registered before the loops are woken, so none can deliver an entry unseen. A peer sends
      // back its old record only if newer than the one we hold (usually it is not).
      const knownPrevious = selfIsReplica ? this.repo.getRecordHeader(key) : undefined;
      for (const { peer, seq } of reserved.entries) {
        const loop = this.loops.get(peer)!;
        tracked.push({ loop, seq, outcome: loop.track(seq, knownPrevious) });
      }
    }
    for (const peer of peers) this.loops.get(peer)!.wake();
    let committed: Awaited<ReturnType<Repository['commitWrite']>>;
    try {
      committed = await this.repo.commitWrite(key, record, selfIsReplica, reserved, this.clock.reading());
    } catch (err) {
      for (const t of tracked) t.loop.untrack(t.seq); // the entries were discarded
      throw err;
    }
    // A loop that had to read from LMDB (far behind) finds the entries only now.
    for (const peer of peers) this.loops.get(peer)!.wake();

    let newest = committed.previous;
    if (!waitForPeers) return toReadResult(newest);

    let acks = localAcks;
    let failed = 0;
    const reasons: string[] = [];
    const describe = () =>
      `write reached ${acks} of the ${required} replicas required at ${level.toUpperCase()}` +
      (reasons.length > 0 ? ` (${reasons.join('; ')})` : '') +
      '; it is stored in the replication log and will still reach every replica';
    try {
      await deadline.race(
        new Promise<void>((resolve, reject) => {
          for (const t of tracked) {
            void t.outcome.then((o) => {
              if (o.delivered) {
                acks++;
                newest = newerRecord(newest, o.previous);
              } else {
                failed++;
                reasons.push(o.reason);
              }
              if (acks >= required) resolve();
              else if (!canStillReach(required, acks, failed, replicas.length)) reject(new NotEnoughReplicasError(describe()));
            });
          }
        }),
        describe,
      );
    } finally {
      for (const t of tracked) t.loop.untrack(t.seq);
    }
    return toReadResult(newest);
  }

  /** Reads `key` from enough replicas for `level` and answers the newest version. */
  async read(key: Buffer, level: ConsistencyLevel, deadline: RequestDeadline): Promise<ReadResult> {
    if (this.closed) throw new ShuttingDownError('node is shutting down; retry on another node');
    this.settings.assertServing();
    const { selfId, replicationFactor } = this.settings;
    const replicas = this.ring.preferenceList(key, replicationFactor);
    const required = requiredAcks(level, replicationFactor);
    const answers: ReplicaAnswer[] = [];
    if (replicas.includes(selfId)) answers.push({ node: selfId, record: this.repo.getRecord(key) });
    if (answers.length < required) {
      const candidates = replicas.filter((id) => id !== selfId).sort((a, b) => Number(this.links.get(b)!.reachable) - Number(this.links.get(a)!.reachable));
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
        this.readers.get(node)!.read(key).then(
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

  /** Read repair: sends the newest record to every replica that answered with an older one. */
  private repairStale(key: Buffer, newest: Buffer, answers: readonly ReplicaAnswer[]): void {
    for (const a of answers) {
      if (a.record !== undefined && compareEncodedVersions(a.record, newest) >= 0) continue;
      this.counters.readRepairs++;
      const batch: StoredRecord[] = [{ key, record: newest }];
      const done =
        a.node === this.settings.selfId
          ? this.repo.applyRecords(batch)
          : this.links.get(a.node)!.client.replicate({ fromNodeId: this.settings.selfId, records: batch, wantPrevious: [] }, { signal: AbortSignal.timeout(this.settings.peerCallMs) });
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
    const sources = [this.settings.selfId, ...this.links.keys()].map((node) => new ScanSource(node, this.scanPage(node, prefix, signal), startAfter));
    const failedNodes: string[] = [];
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

  private scanPage(node: string, prefix: Buffer, signal: AbortSignal): (after: Buffer) => Promise<{ records: StoredRecord[]; done: boolean }> {
    if (node === this.settings.selfId) {
      return async (after) => {
        const records = this.repo.scan(prefix, after, listPageRecords);
        return { records, done: records.length < listPageRecords };
      };
    }
    const link = this.links.get(node)!;
    return async (after) => {
      try {
        const res = await link.client.scanLocal({ fromNodeId: this.settings.selfId, prefix, startAfter: after, limit: listPageRecords }, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.settings.peerCallMs)]) });
        link.markContact();
        return { records: res.records, done: res.done };
      } catch (err) {
        link.markFailure(err);
        throw err;
      }
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

function newerRecord(a: Buffer | undefined, b: Buffer | undefined): Buffer | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareEncodedVersions(b, a) > 0 ? b : a;
}

function toReadResult(record: Buffer | undefined): ReadResult {
  if (record === undefined || isTombstoneRecord(record)) return { found: false, value: undefined };
  return { found: true, value: recordValue(record) };
}
