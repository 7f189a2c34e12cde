import { ClientError, Status } from 'nice-grpc';
import type { Logger } from 'pino';
import type { FetchRangeRequest, PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';
import { murmur3x86_32 } from '../cluster/hash.js';
import type { HybridLogicalClock } from '../cluster/hlc.js';
import { ringHashSeed } from '../cluster/ring.js';
import type { Clock, TimerHandle } from '../platform/clock.js';
import type { BackgroundService } from '../platform/periodic.js';
import { compareRecords } from '../storage/merge-rule.js';
import { decodeRecordHeader } from '../storage/record-codec.js';
import type { Repository, StoredRecord } from '../storage/repository.js';
import { payloadBytesMax, recordMessageBytes } from './message-bytes.js';
import { RateLimiter } from './rate-limiter.js';
import { hashInInterval, peerAnswerBytesMax } from './replica.js';

/**
 * The receiving side of range streaming (docs/membership.md §5): pulls the hash ranges this node
 * gains in one membership change from their sources with paged FetchRange calls, applies each
 * page with the last-writer-wins merge (after observing its newest version in the HLC, as
 * anti-entropy does), and persists a cursor per (transfer, source) once the page is durable, so
 * a restarted streamer over the same repository resumes where the data is. A primary source that
 * fails for sourceFailoverSeconds is joined by every fallback source, each streaming the range
 * from its start with its own cursor. Not wired into the node yet: the owner builds one per
 * change (transfers from src/cluster/transfer-plan.ts) and stops it when the change moves on.
 */

/** One range this node receives in the change, and where from. */
export interface RangeTransfer {
  /**
   * Names the transfer in its cursors (`transfer/<changeId>/<id>/<source>`): unique within the
   * change and without '/' (the range's start as 8 hex digits, say). The same id on every start
   * of the same change, so a restart finds its cursors.
   */
  readonly id: string;
  /** The range: key hashes h with startExclusive < h <= endInclusive, wrapping; equal bounds are the whole circle. */
  readonly startExclusive: number;
  readonly endInclusive: number;
  /**
   * The member this node displaces in the range (it holds every write acknowledged there);
   * undefined when it was declared dead, and the range then streams from every fallback.
   */
  readonly primary: string | undefined;
  /** The range's other old replicas that are not dead: streamed too once the primary fails for sourceFailoverSeconds. */
  readonly fallbacks: readonly string[];
}

/** The call of the peer service streaming makes (the generated nice-grpc client's). */
export type FetchRangeClient = Pick<PeerServiceClient, 'fetchRange'>;

export interface RangeStreamerSettings {
  /** streaming.batchMaxBytes: the max_bytes of each page asked (at most peerAnswerBytesMax less framing). Default 1 MiB. */
  readonly batchMaxBytes?: number;
  /** streaming.maxBytesPerSecond: one token bucket over every transfer's pages; 0 = unlimited. Default 32 MiB/s. */
  readonly maxBytesPerSecond?: number;
  /** streaming.rangesInFlight: streams pulled at once, chosen round-robin over sources. Default 4. */
  readonly rangesInFlight?: number;
  /** streaming.sourceFailoverSeconds: how long a primary fails continuously before the fallbacks stream too. Default 10. */
  readonly sourceFailoverSeconds?: number;
  /** timeouts.peerCallMs: each FetchRange's deadline. */
  readonly peerCallMs: number;
  /** First retry delay of a stream after an error, doubled per consecutive error up to retryDelayMaxMs. Default 100. */
  readonly retryDelayInitialMs?: number;
  /** Default 2000. */
  readonly retryDelayMaxMs?: number;
}

export const streamingBatchBytesDefault = 1024 * 1024;
export const streamingBytesPerSecondDefault = 32 * 1024 * 1024;
export const streamingRangesInFlightDefault = 4;
export const streamingSourceFailoverSecondsDefault = 10;

export interface RangeStreamerDeps {
  readonly selfId: string;
  /** The change the transfers belong to (MembershipState.change.id). */
  readonly changeId: number;
  /** The epoch stamped on every FetchRange (this node's committed one: a function is read per call). */
  readonly epoch: number | (() => number);
  readonly transfers: readonly RangeTransfer[];
  /** The connection to a member, if this node has one (a PeerLink's client reports reachability). */
  clientOf(id: string): FetchRangeClient | undefined;
  readonly repo: Repository;
  /** Observes the newest version of every page before it is applied. */
  readonly hlc: HybridLogicalClock;
  /** Timers, deadlines and durations: no Date.now or setTimeout here. */
  readonly clock: Clock;
  /** Jitter of the retry backoff (seeded in tests and the simulator). */
  readonly rng: { next(): number };
  readonly settings: RangeStreamerSettings;
  readonly logger: Logger;
  /**
   * Whether a member is declared dead now (read per call): a primary declared dead after the
   * streamer started completes its transfers by its fallbacks, as one dead at the start does.
   */
  isDead?(id: string): boolean;
}

/** What a cursor `transfer/<changeId>/<transferId>/<source>` holds (JSON in meta, see encodeTransferCursor). */
export interface TransferCursor {
  /** The hash-index key the next page starts after (the last record applied); undefined: from the start. */
  readonly after: Buffer | undefined;
  /** The source answered the range's last page: its stream is complete. */
  readonly done: boolean;
  /** Records received and applied from this source (tombstones included; re-fetched pages count again). */
  readonly keys: number;
  /** Their bytes: keys plus encoded records. */
  readonly bytes: number;
  /** The source was the transfer's primary when the cursor was written: a done primary completes the transfer for good. */
  readonly primary: boolean;
}

const cursorFormatVersion = 1;

/** The cursor as stored: `{"formatVersion":1,"after":"<hex>","done":false,"keys":12,"bytes":3456,"primary":true}` (after "" = from the start). */
export function encodeTransferCursor(cursor: TransferCursor): Buffer {
  const { after, done, keys, bytes, primary } = cursor;
  return Buffer.from(JSON.stringify({ formatVersion: cursorFormatVersion, after: after?.toString('hex') ?? '', done, keys, bytes, primary }), 'utf8');
}

/** Reads a stored cursor; throws on anything else. */
export function decodeTransferCursor(stored: Buffer): TransferCursor {
  const doc = JSON.parse(stored.toString('utf8')) as Record<string, unknown>;
  const { formatVersion, after, done, keys, bytes, primary } = doc;
  if (formatVersion !== cursorFormatVersion) throw new Error(`transfer cursor format ${String(formatVersion)}; this build reads ${cursorFormatVersion}`);
  if (typeof after !== 'string' || !/^([0-9a-f]{2})*$/.test(after) || typeof done !== 'boolean' || typeof primary !== 'boolean' || !isCount(keys) || !isCount(bytes)) {
    throw new Error(`malformed transfer cursor ${stored.toString('utf8').slice(0, 200)}`);
  }
  return { after: after === '' ? undefined : Buffer.from(after, 'hex'), done, keys, bytes, primary };
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** The meta name (under `transfer/`) of one source's cursor of one transfer. */
export function transferCursorName(changeId: number, transferId: string, source: string): string {
  return `${changeId}/${transferId}/${source}`;
}

/** Deletes every stream cursor of change `changeId` (durably); answers how many there were. */
export async function clearTransferCursors(repo: Repository, changeId: number): Promise<number> {
  const names = repo.transferCursorNames(`${changeId}/`);
  for (const name of names) await repo.storeTransferCursor(name, undefined);
  return names.length;
}

/** One source's stream progress, as progress() answers it. */
export interface SourceProgress {
  readonly role: 'primary' | 'fallback';
  readonly done: boolean;
  readonly keys: number;
  readonly bytes: number;
  /** Pages applied by this streamer (since its start; not persisted). */
  readonly pages: number;
  /** The source's estimate of the records left after the last page, if one was answered. */
  readonly estimatedRecordsLeft: number | undefined;
  /** Consecutive failed calls, and the last one's error. */
  readonly failures: number;
  readonly lastError: string | undefined;
}

export interface TransferProgress {
  readonly id: string;
  /** Complete (§5.4): the primary's stream is done, or, the primary being dead, every fallback's. */
  readonly done: boolean;
  readonly keys: number;
  readonly bytes: number;
  /** The fallbacks stream too (the primary failed for sourceFailoverSeconds, or is dead). */
  readonly fallbacksActive: boolean;
  /** Per source streaming it (the primary, and the fallbacks once active). */
  readonly sources: Readonly<Record<string, SourceProgress>>;
}

export interface StreamingProgress {
  readonly changeId: number;
  readonly transfers: readonly TransferProgress[];
  readonly keys: number;
  readonly bytes: number;
  readonly complete: boolean;
  /** Transfers whose fallbacks were started because their primary kept failing (kvstore_streaming_source_failovers_total). */
  readonly sourceFailovers: number;
}

/** One applied page, for metrics and tests (kvstore_streaming_received_{bytes,keys}_total{source}). */
export interface AppliedPage {
  readonly transferId: string;
  readonly source: string;
  readonly records: number;
  /** Keys plus encoded records. */
  readonly bytes: number;
  readonly done: boolean;
}

interface SourceStream {
  readonly transfer: TransferState;
  readonly source: string;
  readonly role: 'primary' | 'fallback';
  after: Buffer | undefined;
  done: boolean;
  keys: number;
  bytes: number;
  pages: number;
  estimatedRecordsLeft: number | undefined;
  busy: boolean;
  /** Monotonic ms before which it is not retried. */
  retryAtMs: number;
  failures: number;
  lastError: string | undefined;
}

interface TransferState {
  readonly transfer: RangeTransfer;
  /** The streams pulled for it, by source: the primary's, and the fallbacks' once active. */
  readonly streams: Map<string, SourceStream>;
  fallbacksActive: boolean;
  /** A cursor written while its source was primary says done (whoever is primary now). */
  primaryDoneRecorded: boolean;
  complete: boolean;
}

const empty = Buffer.alloc(0);
/** A retry delay is drawn from [this fraction, 1] of the current one, so streams to one source drift apart. */
const retryJitterFloor = 0.5;

function messageOf(error: unknown): string {
  if (error instanceof ClientError) return `${Status[error.code]}: ${error.details}`;
  return error instanceof Error ? error.message : String(error);
}

/** See the module comment. One streamer per change; `start` once, `stop` when done with it. */
export class RangeStreamer implements BackgroundService {
  private readonly transfers: TransferState[] = [];
  /** Sources in round-robin order, and where the next pick starts. */
  private readonly sources: string[];
  private nextSource = 0;
  /** Per source: since when (monotonic ms) every call to it failed; undefined while it answers. */
  private readonly failingSinceMs = new Map<string, number>();
  private readonly limiter: RateLimiter | undefined;
  private readonly batchBytes: number;
  private readonly rangesInFlight: number;
  private readonly failoverMs: number;
  private readonly retryDelayInitialMs: number;
  private readonly retryDelayMaxMs: number;
  private readonly abort = new AbortController();
  private readonly workers: Promise<void>[] = [];
  private waiters: (() => void)[] = [];
  private started = false;
  private stopped = false;
  private complete = false;
  private sourceFailovers = 0;
  private pageListener: ((page: AppliedPage) => void) | undefined;
  private readonly completion: Promise<void>;
  private resolveCompletion!: () => void;
  private rejectCompletion!: (err: Error) => void;

  constructor(private readonly deps: RangeStreamerDeps) {
    const { settings, transfers, changeId, selfId } = deps;
    this.completion = new Promise<void>((resolve, reject) => {
      this.resolveCompletion = resolve;
      this.rejectCompletion = reject;
    });
    // Rejected only by a stop before completion; callers that never ask must not see it as unhandled.
    this.completion.catch(() => {});
    if (!Number.isSafeInteger(changeId) || changeId < 1) throw new Error(`change id ${changeId}: change ids count from 1`);
    this.batchBytes = Math.min(settings.batchMaxBytes ?? streamingBatchBytesDefault, payloadBytesMax(peerAnswerBytesMax));
    this.rangesInFlight = settings.rangesInFlight ?? streamingRangesInFlightDefault;
    this.failoverMs = (settings.sourceFailoverSeconds ?? streamingSourceFailoverSecondsDefault) * 1000;
    this.retryDelayInitialMs = settings.retryDelayInitialMs ?? 100;
    this.retryDelayMaxMs = settings.retryDelayMaxMs ?? 2000;
    const perSecond = settings.maxBytesPerSecond ?? streamingBytesPerSecondDefault;
    if (!(this.batchBytes >= 1) || !Number.isInteger(this.rangesInFlight) || this.rangesInFlight < 1 || !(this.failoverMs >= 0) || !(perSecond >= 0)) {
      throw new Error(`range streaming settings out of range: batchMaxBytes ${this.batchBytes}, rangesInFlight ${this.rangesInFlight}, sourceFailoverSeconds ${this.failoverMs / 1000}, maxBytesPerSecond ${perSecond}`);
    }
    this.limiter = perSecond > 0 ? new RateLimiter(perSecond, deps.clock) : undefined;
    const ids = new Set<string>();
    const sources = new Set<string>();
    for (const t of transfers) {
      const where = `transfer ${JSON.stringify(t.id)}`;
      if (t.id === '' || t.id.includes('/') || ids.has(t.id)) throw new Error(`${where}: transfer ids must be unique, non-empty and without '/'`);
      ids.add(t.id);
      for (const bound of [t.startExclusive, t.endInclusive]) if (!Number.isInteger(bound) || bound < 0 || bound > 0xffffffff) throw new Error(`${where}: ${bound} is not a 32-bit key hash`);
      const named = [...(t.primary === undefined ? [] : [t.primary]), ...t.fallbacks];
      if (new Set(named).size !== named.length) throw new Error(`${where}: a source is named twice (primary ${t.primary}, fallbacks ${t.fallbacks.join(', ')})`);
      for (const s of named) {
        if (s === '' || s.includes('/') || s === selfId) throw new Error(`${where}: source ${JSON.stringify(s)} is this node or not a member id`);
        sources.add(s);
      }
      this.transfers.push(this.load(t));
    }
    this.sources = [...sources].sort();
    for (const state of this.transfers) this.checkTransferComplete(state, false);
    this.checkAllComplete();
  }

  /** Reports every applied page (after its cursor is durable) to `listener`; a later call replaces it. */
  onPage(listener: (page: AppliedPage) => void): void {
    this.pageListener = listener;
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    for (let i = 0; i < this.rangesInFlight; i++) this.workers.push(this.work());
  }

  /** Stops pulling: calls in flight are cancelled, a page being applied is applied and its cursor stored. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort(new Error('range streaming stopped'));
    this.wake();
    await Promise.allSettled(this.workers);
    if (!this.complete) this.rejectCompletion(new Error(`range streaming of change ${this.deps.changeId} stopped before it completed`));
  }

  /** Resolves once every transfer is complete (at once when there are none); rejects if stopped before. */
  whenComplete(): Promise<void> {
    return this.completion;
  }

  isComplete(): boolean {
    return this.complete;
  }

  /**
   * Deletes every cursor of change `changeId` (durably), e.g. once the change is over; answers
   * how many there were. Refused for this streamer's own change while it runs.
   */
  async clearCursors(changeId: number): Promise<number> {
    if (changeId === this.deps.changeId && this.started && !this.stopped) throw new Error(`change ${changeId} is still streaming: stop the streamer before clearing its cursors`);
    return clearTransferCursors(this.deps.repo, changeId);
  }

  progress(): StreamingProgress {
    let keys = 0;
    let bytes = 0;
    const transfers = this.transfers.map((t): TransferProgress => {
      const sources: Record<string, SourceProgress> = {};
      let tKeys = 0;
      let tBytes = 0;
      for (const s of t.streams.values()) {
        sources[s.source] = { role: s.role, done: s.done, keys: s.keys, bytes: s.bytes, pages: s.pages, estimatedRecordsLeft: s.estimatedRecordsLeft, failures: s.failures, lastError: s.lastError };
        tKeys += s.keys;
        tBytes += s.bytes;
      }
      keys += tKeys;
      bytes += tBytes;
      return { id: t.transfer.id, done: t.complete, keys: tKeys, bytes: tBytes, fallbacksActive: t.fallbacksActive, sources };
    });
    return { changeId: this.deps.changeId, transfers, keys, bytes, complete: this.complete, sourceFailovers: this.sourceFailovers };
  }

  /** A transfer's state from its cursors (a restart resumes each stream where its data is). */
  private load(transfer: RangeTransfer): TransferState {
    const { repo, changeId, logger } = this.deps;
    const state: TransferState = { transfer, streams: new Map(), fallbacksActive: false, primaryDoneRecorded: false, complete: false };
    const cursors = new Map<string, TransferCursor>();
    const prefix = `${changeId}/${transfer.id}/`;
    for (const name of repo.transferCursorNames(prefix)) {
      const source = name.slice(prefix.length);
      try {
        const cursor = decodeTransferCursor(repo.transferCursor(name)!);
        cursors.set(source, cursor);
        if (cursor.primary && cursor.done) state.primaryDoneRecorded = true;
      } catch (err) {
        logger.warn({ err, cursor: name }, 'unreadable transfer cursor: streaming that source from the range start');
      }
    }
    if (transfer.primary !== undefined) this.addStream(state, transfer.primary, 'primary', cursors.get(transfer.primary));
    // Fallbacks stream from the start when the primary is dead, and resume when they streamed before.
    if (transfer.primary === undefined || transfer.fallbacks.some((f) => cursors.has(f))) this.activateFallbacks(state, cursors);
    return state;
  }

  private addStream(state: TransferState, source: string, role: 'primary' | 'fallback', cursor: TransferCursor | undefined): void {
    if (state.streams.has(source)) return;
    state.streams.set(source, {
      transfer: state,
      source,
      role,
      after: cursor?.after,
      done: cursor?.done ?? false,
      keys: cursor?.keys ?? 0,
      bytes: cursor?.bytes ?? 0,
      pages: 0,
      estimatedRecordsLeft: undefined,
      busy: false,
      retryAtMs: 0,
      failures: 0,
      lastError: undefined,
    });
  }

  private activateFallbacks(state: TransferState, cursors?: ReadonlyMap<string, TransferCursor>): void {
    state.fallbacksActive = true;
    for (const f of state.transfer.fallbacks) this.addStream(state, f, 'fallback', cursors?.get(f));
  }

  private epoch(): number {
    const { epoch } = this.deps;
    return typeof epoch === 'function' ? epoch() : epoch;
  }

  private async work(): Promise<void> {
    while (!this.stopped && !this.complete) {
      const stream = this.pick();
      if (stream === undefined) {
        await this.idle();
        continue;
      }
      stream.busy = true;
      try {
        await this.pull(stream);
      } finally {
        stream.busy = false;
        this.wake();
      }
    }
  }

  /** Streams that may be pulled now: not done, not busy, their transfer incomplete, past their retry time. */
  private pick(): SourceStream | undefined {
    const now = this.deps.clock.monotonicMs();
    for (let i = 0; i < this.sources.length; i++) {
      const source = this.sources[(this.nextSource + i) % this.sources.length]!;
      for (const t of this.transfers) {
        if (t.complete) continue;
        const s = t.streams.get(source);
        if (s === undefined || s.done || s.busy || s.retryAtMs > now) continue;
        this.nextSource = (this.nextSource + i + 1) % this.sources.length;
        return s;
      }
    }
    return undefined;
  }

  /** Waits for a stream to become free (wake) or for the earliest retry time, whichever comes first. */
  private idle(): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: TimerHandle | undefined;
      const done = () => {
        timer?.cancel();
        resolve();
      };
      this.waiters.push(done);
      let earliest: number | undefined;
      for (const t of this.transfers) {
        if (t.complete) continue;
        for (const s of t.streams.values()) if (!s.done && !s.busy && (earliest === undefined || s.retryAtMs < earliest)) earliest = s.retryAtMs;
      }
      if (earliest !== undefined) timer = this.deps.clock.setTimer(done, Math.max(1, Math.ceil(earliest - this.deps.clock.monotonicMs())));
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Pulls pages from one source until its stream is done, its transfer complete, an error (then backs off) or the stop. */
  private async pull(stream: SourceStream): Promise<void> {
    while (!this.stopped && !stream.done && !stream.transfer.complete) {
      try {
        await this.page(stream);
      } catch (err) {
        if (!this.stopped) this.failed(stream, err);
        return;
      }
      stream.failures = 0;
      stream.lastError = undefined;
      this.failingSinceMs.delete(stream.source);
    }
  }

  /** One page: fetch, check, throttle, observe, apply (durable), then the cursor (durable). */
  private async page(stream: SourceStream): Promise<void> {
    const { deps } = this;
    const { transfer } = stream.transfer;
    const client = deps.clientOf(stream.source);
    if (client === undefined) throw new Error(`this node has no connection to ${stream.source}`);
    const request: FetchRangeRequest = {
      fromNodeId: deps.selfId,
      epoch: BigInt(this.epoch()),
      changeId: BigInt(deps.changeId),
      startExclusive: transfer.startExclusive,
      endInclusive: transfer.endInclusive,
      after: stream.after ?? empty,
      maxBytes: BigInt(this.batchBytes),
    };
    const answer = await client.fetchRange(request, { signal: AbortSignal.any([deps.clock.timeoutSignal(deps.settings.peerCallMs), this.abort.signal]) });
    const records: StoredRecord[] = [];
    let bytes = 0;
    let newest: Buffer | undefined;
    for (const r of answer.records) {
      const hash = murmur3x86_32(r.key, ringHashSeed);
      if (!hashInInterval(hash, transfer.startExclusive, transfer.endInclusive)) {
        throw new Error(`${stream.source} answered a record whose key hash ${hash.toString(16).padStart(8, '0')} lies outside the range of transfer ${transfer.id}`);
      }
      decodeRecordHeader(r.record); // throws on a malformed record, before anything is applied
      if (newest === undefined || compareRecords(r.record, newest) > 0) newest = r.record;
      bytes += r.key.length + r.record.length;
      records.push({ key: r.key, record: r.record });
    }
    if (!answer.done && (records.length === 0 || answer.nextAfter.length === 0)) {
      throw new Error(`${stream.source} answered a FetchRange page that does not advance (${records.length} records, not done)`);
    }
    await this.limiter?.take(records.reduce((n, r) => n + recordMessageBytes(r.key, r.record), 0), this.abort.signal);
    if (newest !== undefined) deps.hlc.observe(decodeRecordHeader(newest).version);
    // The records and the cursor past them commit together: the cursor never runs ahead.
    const after = answer.nextAfter.length > 0 ? Buffer.from(answer.nextAfter) : stream.after;
    const primary = stream.role === 'primary';
    const cursor = encodeTransferCursor({ after, done: answer.done, keys: stream.keys + records.length, bytes: stream.bytes + bytes, primary });
    await deps.repo.applyStreamPage(records, transferCursorName(deps.changeId, transfer.id, stream.source), cursor);
    stream.after = after;
    stream.done = answer.done;
    stream.keys += records.length;
    stream.bytes += bytes;
    stream.pages++;
    stream.estimatedRecordsLeft = Number(answer.estimatedRecords);
    if (primary && stream.done) stream.transfer.primaryDoneRecorded = true;
    this.pageListener?.({ transferId: transfer.id, source: stream.source, records: records.length, bytes, done: stream.done });
    if (stream.done) {
      this.checkTransferComplete(stream.transfer, true);
      this.checkAllComplete();
    }
  }

  /** A failed page: back off with jitter; a primary failing for sourceFailoverSeconds brings in the fallbacks. */
  private failed(stream: SourceStream, err: unknown): void {
    const { clock, logger, rng } = this.deps;
    const now = clock.monotonicMs();
    stream.failures++;
    stream.lastError = messageOf(err);
    const delay = Math.min(this.retryDelayMaxMs, this.retryDelayInitialMs * 2 ** Math.min(30, stream.failures - 1));
    stream.retryAtMs = now + delay * (retryJitterFloor + (1 - retryJitterFloor) * rng.next());
    const log = { source: stream.source, transfer: stream.transfer.transfer.id, failures: stream.failures, error: stream.lastError };
    if (stream.failures === 1) logger.warn(log, 'range streaming page failed; retrying');
    else logger.debug(log, 'range streaming page failed again');
    if (err instanceof ClientError && err.code === Status.INVALID_ARGUMENT && stream.after !== undefined) {
      // Our own cursor was refused (a corrupt cursor, a source that disagrees on the hash): the
      // range again from its start is always correct, re-applied records are no-ops.
      logger.error({ ...log }, 'the source refused the stream cursor: streaming the range again from its start');
      stream.after = undefined;
    }
    const since = this.failingSinceMs.get(stream.source) ?? now;
    this.failingSinceMs.set(stream.source, since);
    const dead = this.deps.isDead?.(stream.source) === true;
    if (now - since < this.failoverMs && !dead) return;
    for (const t of this.transfers) {
      if (t.complete || t.transfer.primary !== stream.source) continue;
      if (!t.fallbacksActive && t.transfer.fallbacks.length > 0) {
        this.activateFallbacks(t);
        this.sourceFailovers++;
        logger.info({ source: stream.source, transfer: t.transfer.id, fallbacks: t.transfer.fallbacks, failingMs: Math.round(now - since) }, `primary source ${dead ? 'declared dead' : 'keeps failing'}: streaming the range from its fallbacks too`);
      }
      // Declared dead since the start: its fallbacks' streams, done already or later, complete the transfer.
      if (dead) this.checkTransferComplete(t, true);
    }
    this.checkAllComplete();
    this.wake();
  }

  private checkTransferComplete(state: TransferState, log: boolean): void {
    if (state.complete) return;
    const { primary, fallbacks } = state.transfer;
    const primaryLive = primary !== undefined && this.deps.isDead?.(primary) !== true;
    const complete = state.primaryDoneRecorded || (primaryLive ? state.streams.get(primary)?.done === true : state.fallbacksActive || primary === undefined ? fallbacks.every((f) => state.streams.get(f)?.done === true) : false);
    if (!complete) return;
    state.complete = true;
    if (primary === undefined && fallbacks.length === 0) this.deps.logger.warn({ transfer: state.transfer.id }, 'transfer has no live source (its primary is dead and there is no fallback): nothing to stream');
    else if (log) this.deps.logger.info({ transfer: state.transfer.id, keys: [...state.streams.values()].reduce((n, s) => n + s.keys, 0) }, 'transfer complete');
  }

  private checkAllComplete(): void {
    if (this.complete || !this.transfers.every((t) => t.complete)) return;
    this.complete = true;
    this.resolveCompletion();
    this.wake();
  }
}
