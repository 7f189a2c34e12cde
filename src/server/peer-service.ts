import type { BackupResponse, PeerServiceImplementation, ReadReplicaRequest, ReadReplicaResponse, ReplicateRequest, ReplicateResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { type DigestForest, leafBucketsPerRange } from '../cluster/digest-tree.js';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { InvalidRequestError } from '../replication/errors.js';
import { inOrder, untilClosing } from './stream-messages.js';
import { compareEncodedVersions, decodeRecordHeader, recordHeaderBytesFixed } from '../storage/record-codec.js';
import { type Repository, recordHeader, scanPageRecordsMax } from '../storage/repository.js';

export interface PeerServiceDeps {
  readonly selfId: string;
  readonly repo: Repository;
  readonly clock: HybridLogicalClock;
  /** Member ids allowed to call (anything else is a misconfigured node). */
  readonly members: ReadonlySet<string>;
  /** This node's hash trees (anti-entropy). */
  readonly forest: DigestForest;
  /** Throws if this node must not share its data (quarantined). */
  readonly assertServing: () => void;
  backup(): Promise<BackupResponse>;
  /** Aborted when the node stops: stream handlers finish the message in progress and end. */
  readonly closing: AbortSignal;
}

/** Messages of one ReplicateStream being applied at once (the sender keeps fewer in flight). */
export const replicateStreamMessagesInFlightMax = 8;

/** Most keys one ReadReplica call may ask for. */
export const readReplicaKeysMax = 1024;

const empty = Buffer.alloc(0);

/** Whether `bytes` starts with a well-formed record version header. */
function isRecordHeader(bytes: Uint8Array): boolean {
  try {
    decodeRecordHeader(bytes);
    return true;
  } catch {
    return false;
  }
}

/** The internal node-to-node service, served on peerListen only. */
export function createPeerService(deps: PeerServiceDeps): PeerServiceImplementation {
  const { repo, clock, forest } = deps;
  const checkRange = (range: number) => {
    if (!Number.isInteger(range) || range >= forest.rangeCount) throw new InvalidRequestError(`range ${range} out of 0..${forest.rangeCount - 1}: are the members' configs identical?`);
  };
  const checkCaller = (from: string) => {
    if (!deps.members.has(from)) throw new InvalidRequestError(`node "${from}" is not a member of this cluster (${[...deps.members].join(', ')})`);
  };
  /** Applies one replicated batch (Replicate, or one message of ReplicateStream). */
  const replicateBatch = async (request: ReplicateRequest): Promise<ReplicateResponse> => {
    deps.assertServing();
    checkCaller(request.fromNodeId);
    // Comparing validates every record's header; observing the newest keeps our clock ahead
    // of everything we store (once per batch: it is the only version that matters).
    let newest: Buffer | undefined;
    for (const r of request.records) {
      if (r.key.length === 0) throw new InvalidRequestError('replicated record has an empty key');
      if (newest === undefined || compareEncodedVersions(r.record, newest) > 0) newest = r.record;
    }
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
    const previous = await repo.applyRecords(request.records, request.wantPrevious);
    return {
      previous: previous.map((record, i) => {
        const key = request.records[request.wantPrevious[i]!]!.key;
        const known = request.knownPrevious[i];
        // The sender keeps its own old value when ours is not newer: send nothing back then.
        if (record === undefined || (known !== undefined && known.length > 0 && compareEncodedVersions(record, known) <= 0)) return { key, record: empty };
        return { key, record };
      }),
    };
  };
  /** Answers one ReadReplica (or one message of ReadReplicaStream). */
  const readRecords = (request: ReadReplicaRequest): ReadReplicaResponse => {
    deps.assertServing();
    checkCaller(request.fromNodeId);
    if (request.keys.length > readReplicaKeysMax) throw new InvalidRequestError(`at most ${readReplicaKeysMax} keys per ReadReplica`);
    return { records: request.keys.map((key) => ({ key, record: repo.getRecord(key) ?? empty })) };
  };
  return {
    async replicate(request) {
      return replicateBatch(request);
    },
    async *replicateStream(requests) {
      // Each message is applied as soon as it arrives, so it joins the next group commit even
      // while an earlier message's commit runs; answers go back in message order.
      const answers = inOrder(untilClosing(requests, deps.closing), replicateStreamMessagesInFlightMax, async (message) => {
        if (message.batch === undefined) throw new InvalidRequestError('ReplicateStream message without a batch');
        return { ack: await replicateBatch(message.batch) };
      });
      yield* answers;
    },
    async readReplica(request) {
      return readRecords(request);
    },
    async *readReplicaStream(requests) {
      for await (const message of untilClosing(requests, deps.closing)) {
        if (message.read === undefined) throw new InvalidRequestError('ReadReplicaStream message without a read');
        yield { records: readRecords(message.read) };
      }
    },
    async scanLocal(request) {
      deps.assertServing();
      checkCaller(request.fromNodeId);
      const page = repo.scan(request.prefix, request.startAfter, request.limit);
      // Only the header (version, tombstone flag) matters for the listing merge: leave values out.
      const records = page.map(({ key, record }) => ({ key, record: record.subarray(0, recordHeaderBytesFixed + record[9]!) }));
      return { records, done: page.length < Math.min(Math.max(1, request.limit), scanPageRecordsMax) };
    },
    async ping() {
      return { nodeId: deps.selfId };
    },
    async rangeDigests(request) {
      deps.assertServing();
      checkCaller(request.fromNodeId);
      request.ranges.forEach(checkRange);
      return { roots: request.ranges.map((r) => forest.root(r)), recordCounts: request.ranges.map((r) => BigInt(forest.recordCount(r))) };
    },
    async leafDigests(request) {
      deps.assertServing();
      checkCaller(request.fromNodeId);
      checkRange(request.range);
      return { leaves: forest.leaves(request.range) };
    },
    async bucketRecords(request) {
      deps.assertServing();
      checkCaller(request.fromNodeId);
      checkRange(request.range);
      const records: { key: Buffer; record: Buffer }[] = [];
      for (const bucket of request.buckets) {
        if (bucket >= leafBucketsPerRange) throw new InvalidRequestError(`bucket ${bucket} out of 0..${leafBucketsPerRange - 1}`);
        const interval = forest.bucketInterval(request.range, bucket);
        for (const r of repo.recordsInHashInterval(interval.startExclusive, interval.endInclusive)) records.push({ key: r.key, record: recordHeader(r.record) });
      }
      return { records };
    },
    async backup(request) {
      checkCaller(request.fromNodeId);
      return deps.backup();
    },
  };
}
