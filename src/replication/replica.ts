import type {
  BucketRecordsRequest,
  ConfirmTombstonesRequest,
  FetchRangeRequest,
  FetchRangeResponse,
  LeafDigestsRequest,
  PingResponse,
  StreamProgress,
  PurgeTombstonesRequest,
  RangeDigestsRequest,
  ReadReplicaRequest,
  ReadReplicaResponse,
  ReplicateRequest,
  ReplicateResponse,
  ScanLocalRequest,
} from '../../gen/kvstore/internal/v1/peer.js';
import { type DigestForest, type HashInterval, leafBucketsPerRange } from '../cluster/digest-tree.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { type Ring, ringHashSeed } from '../cluster/ring.js';
import type { RingView } from '../cluster/ring-view.js';
import { compareRecords } from '../storage/merge-rule.js';
import { decodeRecordHeader, isTombstoneRecord, recordWallMs } from '../storage/record-codec.js';
import { type RecordRefusal, type Repository, recordHeader, scanPageRecordsMax, storableKeyBytesMax } from '../storage/repository.js';
import { FetchRefusedError, InvalidRequestError, MembershipRefusedError } from './errors.js';
import { recordFramingBytesMax, recordMessageBytes } from './message-bytes.js';
import type { Throttle } from './rate-limiter.js';

/**
 * The replica side of the replication protocol: what a node does with what its peers send it
 * (apply a replicated batch with the last-writer-wins merge, answer reads, scans and digests,
 * confirm and purge tombstones). Next to the coordinator side (coordinator.ts, delivery-loop.ts)
 * because the two are one protocol; served over gRPC by src/server/peer-service.ts, which only
 * checks the caller and frames streams, and in the simulator through the same service.
 */
export interface ReplicaDeps {
  readonly selfId: string;
  readonly repo: Repository;
  readonly clock: HybridLogicalClock;
  /**
   * The current ring (to tell which keys this node replicates: tombstone purge) and this node's
   * hash trees over it (anti-entropy); read per request, so a committed membership change applies.
   */
  readonly membership: { view(): RingView; forest(): DigestForest; forestRing(): Ring };
  readonly replicationFactor: number;
  /** cluster.vnodesPerMember, answered on Ping with the replication factor (0 when absent: not said). */
  readonly vnodesPerMember?: number;
  /** limits.maxKeyBytes: a peer's record with a longer key is refused like a client's. */
  readonly maxKeyBytes: number;
  /** tombstones.graceSeconds: the age past which a record for an absent key is refused. */
  readonly graceSeconds: number;
  /** This node's wall clock. */
  readonly wallClock: () => number;
  /** The drain barrier this node has passed (LiveMembership.drainedEpoch), for Ping. */
  readonly drainedEpoch?: () => number;
  /** Entries in this node's replication log (every peer), for Ping. */
  readonly logEntries?: () => number;
  /** What this node received of the ranges it gains in the change in progress, for Ping. */
  readonly streamProgress?: () => StreamProgress | undefined;
  /** This node's committed membership epoch, answered on Ping (0 when absent: unknown). */
  readonly membershipEpoch?: () => number;
  /**
   * FetchRange's refusal (docs/membership.md §5.1): why this node must not answer the request
   * (an epoch that is not its own or adjacent, an interval it is not an old owner of), answered
   * FAILED_PRECONDITION; undefined to serve it. Without it every admitted caller is served.
   */
  readonly checkFetch?: (request: FetchRangeRequest) => string | undefined;
  /**
   * The source side's byte throttle of FetchRange answers (streaming.maxBytesPerSecond; one for
   * all answers): each answer waits for its bytes within the call. Without it answers go at once.
   */
  readonly sendThrottle?: Throttle;
}

/** Messages of one ReplicateStream being applied at once (the sender keeps fewer in flight). */
export const replicateStreamMessagesInFlightMax = 8;

/** Most tombstones one ConfirmTombstones or PurgeTombstones call may carry. */
export const purgeTombstonesMax = 10_000;

/** Most keys one ReadReplica call may ask for. */
export const readReplicaKeysMax = 1024;

/**
 * Most bytes of records in one ReadReplica or BucketRecords answer (a request's max_bytes lowers
 * it; one record larger than it is still answered alone): gRPC's default receive limit, so even
 * a client that asks with max_bytes 0 and default channel options can read the answer.
 */
export const peerAnswerBytesMax = 4 * 1024 * 1024;

/** The byte bound of an answer to a request asking for `maxBytes` (0: no wish). */
function answerBytesMax(maxBytes: bigint): number {
  return maxBytes > 0n && maxBytes < BigInt(peerAnswerBytesMax) ? Number(maxBytes) : peerAnswerBytesMax;
}

const twoTo32 = 2 ** 32;

/**
 * Index of the first of a bucket's records (in the repository's order: key hash counted from the
 * bucket's start, then key bytes) that comes after `afterKey`, a key whose hash lies in the bucket.
 */
function indexAfterKey(records: readonly { key: Buffer }[], interval: HashInterval, afterKey: Buffer, bucket: number): number {
  // The hash index and the ring hash keys alike (murmur3, seed 0): the forest's buckets rely on it.
  const offsetOf = (key: Buffer) => (murmur3x86_32(key, ringHashSeed) - interval.startExclusive - 1 + twoTo32) % twoTo32;
  const cursor = offsetOf(afterKey);
  if (cursor >= (interval.endInclusive - interval.startExclusive + twoTo32) % twoTo32) {
    throw new InvalidRequestError(`start_after_key (${afterKey.length} bytes) does not hash into bucket ${bucket}, the first asked`);
  }
  let lo = 0;
  let hi = records.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const key = records[mid]!.key;
    const offset = offsetOf(key);
    if (offset < cursor || (offset === cursor && key.compare(afterKey) <= 0)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const empty = Buffer.alloc(0);

const hex32 = (n: number) => n.toString(16).padStart(8, '0');

/** Whether `hash` lies in (startExclusive, endInclusive], wrapping; equal bounds are the whole circle. */
export function hashInInterval(hash: number, startExclusive: number, endInclusive: number): boolean {
  if (startExclusive === endInclusive) return true;
  if (startExclusive < endInclusive) return hash > startExclusive && hash <= endInclusive;
  return hash > startExclusive || hash <= endInclusive;
}

/** Refuses a FetchRange whose interval or cursor is not one (InvalidRequestError, saying what to send instead). */
function checkFetchRange(request: FetchRangeRequest): void {
  const { startExclusive: start, endInclusive: end, after } = request;
  for (const [name, bound] of [['start_exclusive', start], ['end_inclusive', end]] as const) {
    if (!Number.isInteger(bound) || bound < 0 || bound >= twoTo32) throw new InvalidRequestError(`FetchRange ${name} ${bound} is not a 32-bit key hash (0..${twoTo32 - 1})`);
  }
  if (request.changeId === 0n) throw new InvalidRequestError('FetchRange change_id 0: name the membership change the transfer belongs to (change ids count from 1)');
  if (after.length === 0) return;
  const interval = `(${hex32(start)}, ${hex32(end)}]`;
  if (after.length < 5 || after.length > 4 + storableKeyBytesMax) {
    throw new InvalidRequestError(`FetchRange after is ${after.length} bytes, not a cursor (a 4-byte key hash, then a key of 1..${storableKeyBytesMax} bytes): send a previous answer's next_after unchanged, or empty to start the interval over`);
  }
  const cursorHash = after.readUInt32BE(0);
  const keyHash = murmur3x86_32(after.subarray(4), ringHashSeed);
  if (cursorHash !== keyHash) {
    throw new InvalidRequestError(`FetchRange after is not a hash-index key: its hash ${hex32(cursorHash)} is not the hash of its key (${hex32(keyHash)}); send a previous answer's next_after unchanged, or empty to start the interval over`);
  }
  if (!hashInInterval(cursorHash, start, end)) {
    throw new InvalidRequestError(`FetchRange after hashes to ${hex32(cursorHash)}, outside the asked interval ${interval}: a cursor of another interval? Send empty after to start this one over`);
  }
}

/** Whether `bytes` starts with a well-formed record version header. */
function isRecordHeader(bytes: Uint8Array): boolean {
  try {
    decodeRecordHeader(bytes);
    return true;
  } catch {
    return false;
  }
}

/** The replica side of one node (see ReplicaDeps). Every method validates its request before it applies anything. */
export function createReplica(deps: ReplicaDeps) {
  const { repo, clock } = deps;
  const checkRange = (range: number) => {
    const forest = deps.membership.forest();
    if (!Number.isInteger(range) || range >= forest.rangeCount) throw new InvalidRequestError(`range ${range} out of 0..${forest.rangeCount - 1}: are the members' configs identical?`);
  };
  /** Applies one replicated batch (Replicate, or one message of ReplicateStream). */
  const replicate = async (request: ReplicateRequest): Promise<ReplicateResponse> => {
    // Comparing validates every record's header; observing the newest keeps our clock ahead
    // of everything we store (once per batch: it is the only version that matters).
    const newest = checkRecords(request.records, 'replicated record');
    if (newest !== undefined) clock.observe(decodeRecordHeader(newest).version);
    // Checked before anything is applied, so a bad request stores nothing.
    const wanted = new Set<number>();
    for (const index of request.wantPrevious) {
      if (index >= request.records.length || wanted.has(index)) {
        throw new InvalidRequestError(`want_previous index ${index} is out of range or repeated (${request.records.length} records)`);
      }
      wanted.add(index);
    }
    for (const known of request.knownPrevious) {
      if (known.length > 0 && !isRecordHeader(known)) throw new InvalidRequestError('known_previous holds an entry that is not a record version header');
    }
    // A record for a key we do not hold, older than the grace, may be a write whose delete was
    // purged here already (see tombstone-gc.ts): it is refused, never applied. A key we hold
    // needs no such check: last-writer-wins against the stored record is enough.
    const oldestAcceptedMs = deps.wallClock() - deps.graceSeconds * 1000;
    // Outside a membership change, a key this node is none of the owners of is never stored: it
    // would be a stray copy nothing reads, repairs or cleans up. Such records come from a log
    // entry (or a repair) planned before a change moved the key's range away from this node;
    // the change re-targeted those entries to the new owners (membership-changes.ts).
    const refuse = (key: Buffer, record: Buffer, stored: Buffer | undefined): RecordRefusal => {
      if (deps.membership.view().phase === 'normal' && !replicates(key)) return 'not-replicated';
      return request.fromLog && stored === undefined && recordWallMs(record) < oldestAcceptedMs ? 'older-than-grace' : undefined;
    };
    const previous = await repo.applyRecords(request.records, request.wantPrevious, refuse);
    // Old values go back while the answer stays within one peer message; past that, headers only.
    let answerBytes = 0;
    const omitted: number[] = [];
    return {
      refused: [...previous.refused],
      notReplicated: [...previous.notReplicated],
      previous: previous.map((record, i) => {
        const key = request.records[request.wantPrevious[i]!]!.key;
        const known = request.knownPrevious[i];
        // The sender keeps its own old value when ours is not newer: send nothing back then.
        if (record === undefined || (known !== undefined && known.length > 0 && compareRecords(recordHeader(record), known) <= 0)) return { key, record: empty };
        answerBytes += key.length + record.length;
        if (answerBytes <= peerAnswerBytesMax) return { key, record };
        omitted.push(i);
        return { key, record: Buffer.from(recordHeader(record)) };
      }),
      previousValueOmitted: omitted,
    };
  };
  /** Validates peer-sent records like client ones, before anything is applied; answers the newest. */
  const checkRecords = (records: readonly { key: Buffer; record: Buffer }[], what: string): Buffer | undefined => {
    let newest: Buffer | undefined;
    for (const r of records) {
      if (r.key.length === 0) throw new InvalidRequestError(`${what} has an empty key`);
      if (r.key.length > deps.maxKeyBytes) throw new InvalidRequestError(`${what} key is ${r.key.length} bytes; limits.maxKeyBytes is ${deps.maxKeyBytes}: are the members' configs identical?`);
      if (!isRecordHeader(r.record)) throw new InvalidRequestError(`${what} for a ${r.key.length}-byte key is not a kvstore record`);
      if (newest === undefined || compareRecords(r.record, newest) > 0) newest = r.record;
    }
    return newest;
  };
  const checkTombstones = (tombstones: readonly { key: Buffer; record: Buffer }[]) => {
    if (tombstones.length > purgeTombstonesMax) throw new InvalidRequestError(`at most ${purgeTombstonesMax} tombstones per call`);
    const newest = checkRecords(tombstones, 'tombstone');
    for (const t of tombstones) if (!isTombstoneRecord(t.record)) throw new InvalidRequestError('a record sent for purging is not a tombstone');
    return newest;
  };
  // During a membership change a key's replicas are its old and its new owners (both get its writes).
  const replicates = (key: Buffer) => deps.membership.view().writeReplicas(key).includes(deps.selfId);
  /** Answers one ReadReplica (or one message of ReadReplicaStream). */
  const read = (request: ReadReplicaRequest): ReadReplicaResponse => {
    if (request.keys.length > readReplicaKeysMax) throw new InvalidRequestError(`at most ${readReplicaKeysMax} keys per ReadReplica`);
    // A prefix of the asked keys, within the byte bound (the first always: the asker pages on).
    const maxBytes = answerBytesMax(request.maxBytes);
    const records: { key: Buffer; record: Buffer }[] = [];
    let bytes = 0;
    for (const key of request.keys) {
      const record = repo.getRecord(key) ?? empty;
      const size = recordMessageBytes(key, record);
      if (records.length > 0 && bytes + size > maxBytes) break;
      bytes += size;
      records.push({ key, record });
    }
    return { records };
  };
  return {
    replicate,
    read,
    /** The clock reading a peer seeds its own from at start. */
    ping(): PingResponse {
      const reading = clock.reading();
      return {
        nodeId: deps.selfId,
        clockWallMs: BigInt(reading.wallMs),
        clockCounter: reading.counter,
        membershipEpoch: BigInt(deps.membershipEpoch?.() ?? 0),
        drainedEpoch: BigInt(deps.drainedEpoch?.() ?? 0),
        streaming: deps.streamProgress?.(),
        logEntries: BigInt(deps.logEntries?.() ?? 0),
        replicationFactor: deps.replicationFactor,
        vnodesPerMember: deps.vnodesPerMember ?? 0,
      };
    },
    scanLocal(request: ScanLocalRequest) {
      // Only the header (version, tombstone flag) matters for the listing merge: values stay out.
      const records = repo.scanHeaders(request.prefix, request.startAfter, request.limit);
      return { records, done: records.length < Math.min(Math.max(1, request.limit), scanPageRecordsMax) };
    },
    async confirmTombstones(request: ConfirmTombstonesRequest) {
      const newest = checkTombstones(request.tombstones);
      // Later versions issued here must supersede these tombstones.
      if (newest !== undefined) clock.observe(decodeRecordHeader(newest).version);
      const replica = request.tombstones.map((t) => replicates(t.key));
      await repo.applyRecords(request.tombstones.filter((_, i) => replica[i]));
      const held = request.tombstones.map((t, i) => replica[i]! && repo.getRecordHeader(t.key)?.equals(t.record) === true);
      return { held, replica, oldestLogEntryUnixMs: BigInt(repo.hints.oldestEnqueuedAtMs() ?? 0), nowUnixMs: BigInt(deps.wallClock()) };
    },
    async purgeTombstones(request: PurgeTombstonesRequest) {
      checkTombstones(request.tombstones);
      // By this node's view, not the sender's: once it knows of a change it may serve stream
      // pages of a moving range, and a tombstone purged after such a page was read would come
      // back on the joiner when it applies it (tombstone-gc.ts). The sender retries after the change.
      const view = deps.membership.view();
      const victims = request.tombstones.filter((t) => !view.isMovingHash(view.readRing.hashKey(t.key)));
      const purged = await repo.purgeExact(victims.map((t) => ({ key: t.key, header: t.record })));
      return { purged };
    },
    rangeDigests(request: RangeDigestsRequest) {
      // The trees' own ring: while they are rebuilt after a placement change, the previous one.
      const ours = deps.membership.forestRing().placementId();
      if (request.forestRingId !== 0 && request.forestRingId !== ours) {
        throw new MembershipRefusedError(`this node's hash trees cover another ring (${ours}, asked ${request.forestRingId}): one of the two has not adopted the latest membership epoch yet; the next round compares them`);
      }
      request.ranges.forEach(checkRange);
      const forest = deps.membership.forest();
      return { roots: request.ranges.map((r) => forest.root(r)), recordCounts: request.ranges.map((r) => BigInt(forest.recordCount(r))) };
    },
    leafDigests(request: LeafDigestsRequest) {
      checkRange(request.range);
      return { leaves: deps.membership.forest().leaves(request.range) };
    },
    /**
     * One page of a hash interval for a member receiving it (docs/membership.md §5.1), within
     * min(max_bytes, peerAnswerBytesMax) (the first record always), after checkFetch allows it
     * and the send throttle lets its bytes go (`signal`: the call's, which ends the wait).
     */
    async fetchRange(request: FetchRangeRequest, signal?: AbortSignal): Promise<FetchRangeResponse> {
      checkFetchRange(request);
      const refusal = deps.checkFetch?.(request);
      if (refusal !== undefined) throw new FetchRefusedError(refusal);
      const { startExclusive: start, endInclusive: end } = request;
      const page = repo.recordsInHashIntervalPage(start, end, request.after.length > 0 ? request.after : undefined, answerBytesMax(request.maxBytes), recordFramingBytesMax);
      let bytes = 0;
      for (const r of page.records) bytes += recordMessageBytes(r.key, r.record);
      if (bytes > 0) await deps.sendThrottle?.take(bytes, signal);
      // Murmur3 spreads keys evenly: this node's records prorated by the hash width left after the page.
      const widthLeft = page.done || page.next === undefined ? 0 : (end - page.next.readUInt32BE(0) + twoTo32) % twoTo32;
      const estimated = Math.round((repo.recordCounts().records * widthLeft) / twoTo32);
      return { records: page.records, done: page.done, nextAfter: page.next ?? empty, estimatedRecords: BigInt(estimated) };
    },
    bucketRecords(request: BucketRecordsRequest) {
      checkRange(request.range);
      for (const bucket of request.buckets) {
        if (bucket >= leafBucketsPerRange) throw new InvalidRequestError(`bucket ${bucket} out of 0..${leafBucketsPerRange - 1}`);
      }
      // One page within the byte bound (never empty while records are left); `more` says where
      // the next one starts.
      const maxBytes = answerBytesMax(request.maxBytes);
      const forest = deps.membership.forest();
      const records: { key: Buffer; record: Buffer }[] = [];
      let bytes = 0;
      for (const [i, bucket] of request.buckets.entries()) {
        const interval = forest.bucketInterval(request.range, bucket);
        const inBucket = repo.recordsInHashInterval(interval.startExclusive, interval.endInclusive);
        const from = i === 0 && request.startAfterKey.length > 0 ? indexAfterKey(inBucket, interval, request.startAfterKey, bucket) : 0;
        for (let j = from; j < inBucket.length; j++) {
          const r = { key: inBucket[j]!.key, record: recordHeader(inBucket[j]!.record) };
          const size = recordMessageBytes(r.key, r.record);
          if (records.length > 0 && bytes + size > maxBytes) {
            return { records, more: true, nextBucket: bucket, nextAfterKey: j > from ? inBucket[j - 1]!.key : empty };
          }
          bytes += size;
          records.push(r);
        }
      }
      return { records, more: false, nextBucket: 0, nextAfterKey: empty };
    },
  };
}

export type Replica = ReturnType<typeof createReplica>;
