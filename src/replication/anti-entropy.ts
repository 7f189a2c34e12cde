import { type Clock, sleep } from '../platform/clock.js';
import { PeriodicTask } from '../platform/periodic.js';
import type { Logger } from 'pino';
import {
  BucketRecordsRequest,
  BucketRecordsResponse,
  LeafDigestsRequest,
  LeafDigestsResponse,
  RangeDigestsRequest,
  RangeDigestsResponse,
  ReadReplicaRequest,
  ReadReplicaResponse,
  ReplicateRequest,
} from '../../gen/kvstore/internal/v1/peer.js';
import type { RangeVerification } from '../../gen/kvstore/v1/kvstore.js';
import { DigestForest, formatDigest, leafBucketsPerRange } from '../cluster/digest-tree.js';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { decodeRecordHeader, recordHeader } from '../storage/record-codec.js';
import { compareRecords } from '../storage/merge-rule.js';
import type { Repository, StoredRecord } from '../storage/repository.js';
import { countWithinBytes, keyMessageBytes, payloadBytesMax, recordMessageBytes } from './message-bytes.js';
import type { RingView } from '../cluster/ring-view.js';
import { MembershipRefusedError } from './errors.js';
import type { LiveMembership } from './live-membership.js';
import type { PeerDirectory } from './peer-directory.js';
import { RateLimiter } from './rate-limiter.js';
import { readBatchKeysMax } from './read-batcher.js';

export interface AntiEntropySettings {
  readonly selfId: string;
  readonly replicationFactor: number;
  /** Seconds between background rounds; 0 turns the background off (on-demand still works). */
  readonly intervalSeconds: number;
  readonly maxRecordsPerSecond: number;
  readonly peerCallMs: number;
  /**
   * replication.batchMaxBytes: most bytes of records in one push (Replicate) and one pulled
   * answer (the max_bytes of ReadReplica and BucketRecords); never more than the peer link sends.
   * Default antiEntropyBatchBytesDefault.
   */
  readonly batchMaxBytes?: number;
}

/** Byte bound of a push or a pulled answer when the settings give none: replication.batchMaxBytes's default. */
export const antiEntropyBatchBytesDefault = 8 * 1024 * 1024;

/** What one exchange with one peer did. */
export interface ExchangeResult {
  readonly peer: string;
  readonly rangesCompared: number;
  readonly rangesDiffering: number;
  readonly pulled: number;
  readonly pushed: number;
  readonly finishedAtMs: number;
  readonly error: string | undefined;
  /** Protobuf bytes of the exchange's requests and responses. */
  readonly bytes: number;
  readonly durationMs: number;
}

/**
 * How long verify waits for hash trees being rebuilt after a placement change (this node's, or
 * a peer's that still answers for its previous ring) before it reports them, and how often it looks.
 */
export const verifyRebuildWaitMs = 60_000;
const verifyRebuildPollMs = 200;

/** Records per Replicate call when pushing repairs (and the batch's bytes within batchMaxBytes). */
const pushBatchRecordsMax = 512;

/**
 * Anti-entropy: makes replicas converge whatever happened (lost disk, restore from an old
 * backup, dropped replication-log entries, bugs). Each exchange with a peer compares the roots of
 * every ring range both hold (one call), descends into the leaves of differing ranges only, and
 * exchanges just the records of differing buckets, newest version winning in both directions.
 * Runs in the background every intervalSeconds and on demand (Repair RPC), rate-limited in
 * records per second.
 */
export class AntiEntropy {
  readonly lastExchange = new Map<string, ExchangeResult>();
  private readonly limiter: RateLimiter;
  private readonly running = new Map<string, Promise<ExchangeResult>>();
  private readonly task: PeriodicTask | undefined;
  private stopped = false;
  private exchangeObserver: ((result: ExchangeResult) => void) | undefined;

  constructor(
    private readonly settings: AntiEntropySettings,
    /** The ring and hash trees, read per exchange: a committed membership change applies to the next. */
    private readonly membership: LiveMembership,
    private readonly repo: Repository,
    private readonly clock: HybridLogicalClock,
    private readonly peers: PeerDirectory,
    private readonly logger: Logger,
    /** Timers and wall time (the HLC is `clock`). */
    private readonly time: Clock,
  ) {
    this.limiter = new RateLimiter(settings.maxRecordsPerSecond, time);
    if (settings.intervalSeconds > 0) {
      this.task = new PeriodicTask(time, settings.intervalSeconds * 1000, () => this.backgroundRound(), (err) => logger.error({ err }, 'anti-entropy round failed'));
    }
  }

  /** Reports every exchange's result (finished or failed) to `observer` (for metrics; a later call replaces it). */
  onExchange(observer: (result: ExchangeResult) => void): void {
    this.exchangeObserver = observer;
  }

  start(): void {
    this.task?.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.task?.stop();
    await Promise.allSettled(this.running.values());
  }

  /** Runs an exchange with every peer now (one at a time); a peer already exchanging is joined. */
  async repairAll(): Promise<ExchangeResult[]> {
    const results: ExchangeResult[] = [];
    for (const link of this.peers.links()) results.push(await this.exchangeWith(link.id));
    return results;
  }

  exchangeWith(peer: string): Promise<ExchangeResult> {
    let run = this.running.get(peer);
    if (run === undefined) {
      run = this.exchange(peer)
        .then((result) => {
          this.exchangeObserver?.(result);
          return result;
        })
        .finally(() => this.running.delete(peer));
      this.running.set(peer, run);
    }
    return run;
  }

  /** Digest of every range from every replica (this node's own and the peers'). */
  async verify(): Promise<RangeVerification[]> {
    const { selfId } = this.settings;
    const view = this.membership.view();
    if (view.phase !== 'normal') {
      throw new MembershipRefusedError(`membership epoch ${view.epoch} has a change in progress (${view.phase}): verify once it completes, when every key has exactly its owners`);
    }
    const waitUntilMs = this.time.monotonicMs() + verifyRebuildWaitMs;
    while (!this.membership.forestIsCurrent()) {
      if (this.time.monotonicMs() > waitUntilMs) throw new MembershipRefusedError(`${selfId}'s hash trees are still being rebuilt for membership epoch ${view.epoch}: verify again in a moment`);
      await sleep(this.time, verifyRebuildPollMs);
    }
    const forest = this.membership.forest();
    // Every live member is asked for every range: owners for their digests, the others to show
    // they hold nothing there (a stray copy would otherwise go unseen).
    const allRanges = Array.from({ length: forest.rangeCount }, (_, r) => r);
    const rangesOf = new Map<string, number[]>(this.peers.links().map((l) => [l.id, allRanges]));
    for (let r = 0; r < forest.rangeCount; r++) {
      for (const node of this.ownersOf(view, r)!) {
        if (node !== selfId && !rangesOf.has(node)) rangesOf.set(node, allRanges);
      }
    }
    const answers = new Map<string, { roots: Map<number, { digest: string; count: number }>; error?: string }>();
    await Promise.all(
      [...rangesOf].map(async ([node, ranges]) => {
        const link = this.peers.link(node)!;
        try {
          const ask = () => link.client.rangeDigests({ fromNodeId: selfId, ranges, forestRingId: view.unionRing.placementId() }, { signal: this.time.timeoutSignal(this.settings.peerCallMs) });
          let res: Awaited<ReturnType<typeof ask>>;
          for (;;) {
            try {
              res = await ask();
              break;
            } catch (err) {
              // A peer still rebuilding its trees answers for its previous ring a little longer.
              if (!hashTreesElsewhere(err) || this.time.monotonicMs() > waitUntilMs) throw err;
              await sleep(this.time, verifyRebuildPollMs);
            }
          }
          answers.set(node, { roots: new Map(ranges.map((r, i) => [r, { digest: formatDigest(res.roots[i]!), count: Number(res.recordCounts[i] ?? 0) }])) });
        } catch (err) {
          answers.set(node, { roots: new Map(), error: (err as Error).message });
        }
      }),
    );
    const out: RangeVerification[] = [];
    for (let r = 0; r < forest.rangeCount; r++) {
      const range = forest.range(r);
      const replicas = this.ownersOf(view, r)!.map((node) => {
        if (node === selfId) return { nodeId: node, digest: formatDigest(forest.root(r)), recordCount: BigInt(forest.recordCount(r)), error: '' };
        const answer = answers.get(node)!;
        const root = answer.roots.get(r);
        return { nodeId: node, digest: root?.digest ?? '', recordCount: BigInt(root?.count ?? 0), error: root === undefined ? (answer.error ?? 'no answer') : '' };
      });
      const owners = new Set(replicas.map((x) => x.nodeId));
      const strays = [];
      if (!owners.has(selfId) && forest.recordCount(r) > 0) strays.push({ nodeId: selfId, digest: formatDigest(forest.root(r)), recordCount: BigInt(forest.recordCount(r)), error: '' });
      for (const [node, answer] of answers) {
        const root = answer.roots.get(r);
        if (!owners.has(node) && root !== undefined && root.count > 0) strays.push({ nodeId: node, digest: root.digest, recordCount: BigInt(root.count), error: '' });
      }
      const agree = strays.length === 0 && replicas.every((x) => x.digest !== '' && x.digest === replicas[0]!.digest);
      out.push({ range: r, startExclusive: range.startExclusive, endInclusive: range.endInclusive, replicas, agree, strays });
    }
    return out;
  }

  private async backgroundRound(): Promise<void> {
    // A node declared dead or removed pushes nothing: its copies may be older than what was purged.
    if (!this.membership.isLive(this.settings.selfId)) return;
    for (const link of this.peers.links()) {
      if (this.stopped) return;
      if (!link.reachable) continue;
      const peer = link.id;
      const result = await this.exchangeWith(peer);
      if (result.error === undefined && result.pulled + result.pushed > 0) {
        this.logger.info({ peer, pulled: result.pulled, pushed: result.pushed, ranges: result.rangesDiffering }, 'anti-entropy repaired records');
      }
    }
  }

  /**
   * The replicas of hash-tree range `r`; undefined for a range moving in a membership change
   * (streaming fills its new owners; repairing it meanwhile would compare different owner sets).
   */
  private ownersOf(view: RingView, r: number): string[] | undefined {
    if (view.phase === 'normal') return view.unionRing.replicasOfRange(r, this.settings.replicationFactor);
    const owners = view.ownersOfUnionRange(r);
    return owners.moving ? undefined : owners.old;
  }

  private async exchange(peer: string): Promise<ExchangeResult> {
    const { selfId, replicationFactor, peerCallMs } = this.settings;
    const link = this.peers.link(peer);
    if (link === undefined) throw new Error(`${peer} is not a member`);
    const view = this.membership.view();
    const forest = this.membership.forest();
    const call = () => ({ signal: this.time.timeoutSignal(peerCallMs) });
    // Every request and asked answer within this many bytes of records (or keys).
    const batchBytes = Math.min(this.settings.batchMaxBytes ?? antiEntropyBatchBytesDefault, payloadBytesMax(link.messageBytesMax));
    const shared: number[] = [];
    // Trees being rebuilt after a placement change cover the previous ring's ranges, which the
    // view's owners do not describe: nothing is compared until they are swapped in.
    if (this.membership.forestIsCurrent()) for (let r = 0; r < forest.rangeCount; r++) {
      const replicas = this.ownersOf(view, r);
      if (replicas !== undefined && replicas.includes(selfId) && replicas.includes(peer)) shared.push(r);
    }
    let rangesDiffering = 0;
    let pulled = 0;
    let pushed = 0;
    let bytes = 0;
    const startedMs = this.time.monotonicMs();
    try {
      const digestsRequest = { fromNodeId: selfId, ranges: shared, forestRingId: view.unionRing.placementId() };
      const digests = await link.client.rangeDigests(digestsRequest, call());
      bytes += RangeDigestsRequest.encode(digestsRequest).finish().length + RangeDigestsResponse.encode(digests).finish().length;
      const { roots } = digests;
      const differing = shared.filter((r, i) => !forest.root(r).equals(roots[i]!));
      rangesDiffering = differing.length;
      for (const range of differing) {
        if (this.stopped) break;
        const leafRequest = { fromNodeId: selfId, range };
        const leafResponse = await link.client.leafDigests(leafRequest, call());
        bytes += LeafDigestsRequest.encode(leafRequest).finish().length + LeafDigestsResponse.encode(leafResponse).finish().length;
        const { leaves } = leafResponse;
        const mine = forest.leaves(range);
        const buckets: number[] = [];
        for (let bucket = 0; bucket < leafBucketsPerRange; bucket++) if (!mine[bucket]!.equals(leaves[bucket]!)) buckets.push(bucket);
        if (buckets.length === 0) continue;
        // Their version headers for the differing buckets, page by page, then only the records
        // that differ move.
        const ours = new Map<string, StoredRecord>();
        for (const bucket of buckets) {
          const interval = forest.bucketInterval(range, bucket);
          for (const r of this.repo.recordsInHashInterval(interval.startExclusive, interval.endInclusive)) ours.set(r.key.toString('latin1'), r);
        }
        const pullKeys: Buffer[] = [];
        let bucketRequest: BucketRecordsRequest = { fromNodeId: selfId, range, buckets, maxBytes: BigInt(batchBytes), startAfterKey: Buffer.alloc(0) };
        for (;;) {
          const bucketResponse = await link.client.bucketRecords(bucketRequest, call());
          bytes += BucketRecordsRequest.encode(bucketRequest).finish().length + BucketRecordsResponse.encode(bucketResponse).finish().length;
          for (const t of bucketResponse.records) {
            const k = t.key.toString('latin1');
            const o = ours.get(k);
            const cmp = o === undefined ? 1 : compareRecords(t.record, recordHeader(o.record));
            if (cmp >= 0) ours.delete(k); // same version, or theirs is newer: nothing to push
            if (cmp > 0) pullKeys.push(t.key);
          }
          if (!bucketResponse.more) break;
          // The next page resumes in an asked bucket, strictly after this page's start.
          const at = bucketRequest.buckets.indexOf(bucketResponse.nextBucket);
          if (bucketResponse.records.length === 0 || at < 0 || (at === 0 && bucketResponse.nextAfterKey.equals(bucketRequest.startAfterKey))) {
            throw new Error(`${peer} answered a BucketRecords page that does not advance (${bucketResponse.records.length} records, next bucket ${bucketResponse.nextBucket})`);
          }
          bucketRequest = { ...bucketRequest, buckets: bucketRequest.buckets.slice(at), startAfterKey: bucketResponse.nextAfterKey };
        }
        const toPush = [...ours.values()];
        await this.limiter.take(pullKeys.length + toPush.length);
        // Pulled in answers of at most batchBytes: the peer answers a prefix of the asked keys,
        // and the next request starts after it.
        for (let i = 0; i < pullKeys.length; ) {
          const asked = countWithinBytes(pullKeys, i, batchBytes, keyMessageBytes, readBatchKeysMax);
          const readRequest = { fromNodeId: selfId, keys: pullKeys.slice(i, i + asked), maxBytes: BigInt(batchBytes) };
          const readResponse = await link.client.readReplica(readRequest, call());
          bytes += ReadReplicaRequest.encode(readRequest).finish().length + ReadReplicaResponse.encode(readResponse).finish().length;
          const answered = readResponse.records.length;
          if (answered === 0 || answered > asked) throw new Error(`${peer} answered ${answered} records to a ReadReplica of ${asked} keys`);
          const toPull = readResponse.records.filter((r) => r.record.length > 0).map((r) => ({ key: r.key, record: r.record }));
          for (const p of toPull) this.clock.observe(decodeRecordHeader(p.record).version);
          await this.repo.applyRecords(toPull);
          pulled += toPull.length;
          i += answered;
        }
        for (let i = 0; i < toPush.length; ) {
          const count = countWithinBytes(toPush, i, batchBytes, (r) => recordMessageBytes(r.key, r.record), pushBatchRecordsMax);
          const pushRequest = { fromNodeId: selfId, records: toPush.slice(i, i + count), wantPrevious: [], knownPrevious: [], fromLog: false };
          await link.client.replicate(pushRequest, call());
          bytes += ReplicateRequest.encode(pushRequest).finish().length;
          pushed += pushRequest.records.length;
          i += count;
        }
      }
      const result = { peer, rangesCompared: shared.length, rangesDiffering, pulled, pushed, finishedAtMs: this.time.wallMs(), error: undefined, bytes, durationMs: Math.round(this.time.monotonicMs() - startedMs) };
      this.lastExchange.set(peer, result);
      return result;
    } catch (err) {
      // finishedAtMs keeps the last *completed* exchange's time (0 if none); the error says why this one failed.
      const previous = this.lastExchange.get(peer);
      const result = { peer, rangesCompared: 0, rangesDiffering, pulled, pushed, finishedAtMs: previous?.error === undefined ? (previous?.finishedAtMs ?? 0) : previous.finishedAtMs, error: (err as Error).message, bytes, durationMs: Math.round(this.time.monotonicMs() - startedMs) };
      this.lastExchange.set(peer, result);
      return result;
    }
  }
}

export { DigestForest };

/** A RangeDigests refusal saying the peer's hash trees cover another ring (replica.ts). */
function hashTreesElsewhere(err: unknown): boolean {
  return err instanceof Error && err.message.includes('hash trees cover another ring');
}
