import { type Clock, sleep } from '../platform/clock.js';
import { pRetryForever, type RetryForever } from '../platform/retry.js';
import type { Logger } from 'pino';
import type { HintEntry, HintLog } from '../storage/hint-log.js';
import type { PeerLink } from './peer-link.js';
import type { ReplicateStreamRequest, ReplicateStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { PeerStream } from './peer-stream.js';

export interface DeliverySettings {
  readonly selfId: string;
  readonly batchMaxEntries: number;
  readonly batchMaxBytes: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  readonly peerCallMs: number;
  /**
   * Entries enqueued longer ago than this are never sent (dropped, counted): a write that old
   * may be superseded by a delete whose tombstone is purged already (tombstone-gc.ts).
   */
  readonly entryAgeMsMax: number;
}

/** What a coordinator waiting on one log entry learns. */
export type DeliveryOutcome =
  | {
      readonly delivered: true;
      readonly previous: Buffer | undefined;
      /** `previous` is a version header only: its value did not fit the peer's answer. */
      readonly previousValueOmitted?: boolean;
    }
  | { readonly delivered: false; readonly reason: string };

const noRecord = Buffer.alloc(0);

/**
 * Batches one loop keeps in flight to its peer. The peer applies a message as soon as it arrives
 * (see peer-service.ts), so the next batch joins the peer's next group commit while the previous
 * one is still committing, instead of waiting a full round trip after it.
 */
export const deliveryBatchesInFlightMax = 2;

/** What a peer answered for a batch, by index into the batch. */
interface BatchAnswer {
  readonly previous: ReadonlyMap<number, Buffer | undefined>;
  /** Batch indexes whose previous record came back as a header only. */
  readonly valueOmitted: ReadonlySet<number>;
  /** Entries the peer refused as too old (see ReplicateResponse.refused). */
  readonly refused: ReadonlySet<number>;
  /** Entries of keys the peer no longer replicates after a membership change (ReplicateResponse.not_replicated). */
  readonly notReplicated: ReadonlySet<number>;
}

type SendResult = { readonly ok: true; readonly answer: BatchAnswer } | { readonly ok: false; readonly error: unknown };

/** Told of each batch the peer acknowledged: its entries and the time from sending it to the answer (for metrics). */
export type DeliveryObserver = (batch: { readonly entries: number; readonly durationMs: number }) => void;

interface Waiter {
  /** Version header of the newest old record the coordinator knows (the peer answers only a newer one). */
  readonly knownPrevious: Buffer | undefined;
  resolve(outcome: DeliveryOutcome): void;
}

/**
 * Drains one peer's replication-log queue: reads a batch in sequence order, sends it as one
 * message of the internal ReplicateStream (the peer applies it durably and answers, in message
 * order), deletes it from the log once answered, repeats. Woken at once by new entries. Up to
 * deliveryBatchesInFlightMax batches are in flight, so entries reach the peer in log order, and
 * everything written while the pipeline is full goes in the next batch: batches grow with load.
 * When a send fails, the later batches in flight are abandoned (resent later), and the failed
 * one is retried alone with p-retry's exponential, jittered, capped backoff until the peer
 * answers; a peer seen up again (by the prober or any other call) cuts the wait short.
 *
 * Coordinators waiting for a write to reach W replicas register a waiter per entry; the loop
 * resolves it when the batch holding the entry is acknowledged, or with a failure as soon as the
 * peer is found unreachable (the entry itself stays in the log and is delivered later).
 */
export class DeliveryLoop {
  private readonly waiters = new Map<number, Waiter>();
  private wakeUp: (() => void) | undefined;
  /** Batches sent and not yet acknowledged, oldest first (they cover consecutive sequences). */
  private readonly inFlight: { batch: readonly HintEntry[]; answer: Promise<SendResult> }[] = [];
  private pendingWake = false;
  private stopped = false;
  private backoff: AbortController | undefined;
  private running: Promise<void> | undefined;
  /** Batches go as messages of one long-lived stream: a new call per batch cost more than the batch. */
  private readonly stream: PeerStream<ReplicateStreamRequest, ReplicateStreamResponse>;
  /** Highest sequence sent and acknowledged (entries up to it are delivered). */
  private deliveredSeq = 0;
  delivered = 0;
  /** Entries the peer refused as older than its tombstone grace. */
  refused = 0;
  /** Entries the peer turned away as none of its keys' owners any more (a completed membership change). */
  notReplicated = 0;
  private observer: DeliveryObserver | undefined;

  constructor(
    private readonly link: PeerLink,
    private readonly log: HintLog,
    private readonly settings: DeliverySettings,
    private readonly logger: Logger,
    /** Timers and this node's wall time. */
    private readonly clock: Clock,
    /** How a failed batch is retried (p-retry on the system clock; the simulator's own on simulated time). */
    private readonly retry: RetryForever = pRetryForever,
  ) {
    this.stream = new PeerStream((requests, options) => link.client.replicateStream(requests, options), link.id, settings.peerCallMs, clock, link);
    link.onReachabilityChange((_, reachable) => {
      if (reachable) this.backoff?.abort(new Error('peer reachable again'));
      else this.failWaiters(`${link.id} is unreachable (${link.lastError ?? 'no answer'})`);
    });
  }

  /** Reports every acknowledged batch to `observer` (one at a time: a later call replaces it). */
  observeDeliveries(observer: DeliveryObserver): void {
    this.observer = observer;
  }

  get peerId(): string {
    return this.link.id;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** New entries were committed to this peer's queue. */
  wake(): void {
    this.pendingWake = true;
    const wake = this.wakeUp;
    this.wakeUp = undefined;
    wake?.();
  }

  /**
   * Registers interest in entry `seq`. Call it before the entry's transaction commits (from
   * inside it), so the loop cannot deliver the entry unseen.
   */
  track(seq: number, knownPrevious?: Buffer): Promise<DeliveryOutcome> {
    if (!this.link.reachable) {
      return Promise.resolve({ delivered: false, reason: `${this.link.id} is unreachable (${this.link.lastError ?? 'no answer'})` });
    }
    return new Promise((resolve) => this.waiters.set(seq, { knownPrevious, resolve }));
  }

  /** Forgets a waiter (the coordinator stopped waiting). */
  untrack(seq: number): void {
    this.waiters.delete(seq);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.backoff?.abort(new Error('stopping'));
    this.wake();
    this.failWaiters('node is shutting down');
    // A batch in flight fails now instead of at its timeout; it stays in the log for later.
    this.stream.close();
    await this.running;
  }

  /** No batch is on its way to the peer: a wake now sends at once, alone. */
  get idle(): boolean {
    return this.inFlight.length === 0;
  }

  private async run(): Promise<void> {
    const inFlight = this.inFlight;
    let sentSeq = this.deliveredSeq;
    while (!this.stopped) {
      if (inFlight.length < deliveryBatchesInFlightMax) {
        this.pendingWake = false;
        const batch = this.log.read(this.link.id, sentSeq, this.settings.batchMaxEntries, this.settings.batchMaxBytes);
        if (batch.length > 0) {
          sentSeq = batch[batch.length - 1]!.seq;
          inFlight.push({ batch, answer: this.sendOnce(batch) });
          continue;
        }
      }
      if (inFlight.length === 0) {
        if (!this.pendingWake) await new Promise<void>((resolve) => (this.wakeUp = resolve));
        continue;
      }
      // Wait for the oldest answer; with room in the pipeline (the read above found nothing new),
      // new entries also end the wait.
      const oldest = inFlight[0]!;
      const woken = inFlight.length < deliveryBatchesInFlightMax ? new Promise<undefined>((resolve) => (this.wakeUp = () => resolve(undefined))) : undefined;
      const result = woken === undefined ? await oldest.answer : await Promise.race([oldest.answer, woken]);
      if (result === undefined) continue; // woken: fill the pipeline
      inFlight.shift();
      if (result.ok) {
        this.acknowledge(oldest.batch, result.answer);
        continue;
      }
      // The stream failed: every later batch on it failed or will be resent anyway (a
      // redelivery is harmless under LWW). Retry the failed batch with backoff, then go on.
      await Promise.all(inFlight.map((f) => f.answer));
      inFlight.length = 0;
      const answer = await this.deliver(oldest.batch);
      if (answer === undefined) return; // stopped
      this.acknowledge(oldest.batch, answer);
      sentSeq = this.deliveredSeq;
    }
  }

  /** `batch` reached the peer: resolve its waiters and delete it from the log. */
  private acknowledge(batch: readonly HintEntry[], answer: BatchAnswer): void {
    this.deliveredSeq = batch[batch.length - 1]!.seq;
    this.delivered += batch.length - answer.refused.size - answer.notReplicated.size;
    this.refused += answer.refused.size;
    this.notReplicated += answer.notReplicated.size;
    if (answer.refused.size > 0) this.logger.warn({ peer: this.link.id, refused: answer.refused.size }, 'peer refused replication-log entries older than its tombstone grace (its clock may be far ahead of ours)');
    // Expected right after a membership change: the entries were re-targeted to the new owners.
    if (answer.notReplicated.size > 0) this.logger.info({ peer: this.link.id, entries: answer.notReplicated.size }, 'peer no longer replicates the keys of some replication-log entries (a membership change moved them); dropped');
    for (const [i, entry] of batch.entries()) {
      const waiter = this.waiters.get(entry.seq);
      if (waiter === undefined) continue;
      this.waiters.delete(entry.seq);
      if (answer.refused.has(i)) waiter.resolve({ delivered: false, reason: `${this.link.id} refused the write as older than its tombstone grace` });
      else if (answer.notReplicated.has(i)) waiter.resolve({ delivered: false, reason: `${this.link.id} no longer replicates the key (a membership change moved it)` });
      else waiter.resolve({ delivered: true, previous: answer.previous.get(i), previousValueOmitted: answer.valueOmitted.has(i) });
    }
    // Deleting delivered entries need not hold up the next batch: a crash before the delete
    // commits only means redelivery, which the LWW merge makes harmless.
    this.log.remove(batch);
  }

  /**
   * The request for `batch`, rebuilt for every attempt: entries the log's limits dropped
   * meanwhile must not be sent late (an entry older than the tombstone grace could carry a value
   * whose delete was purged). Entries are dropped only from the head of the log, so what is left is a suffix.
   */
  private buildRequest(batch: readonly HintEntry[]) {
    let first = 0;
    const oldestSendableMs = this.clock.wallMs() - this.settings.entryAgeMsMax;
    const expired: HintEntry[] = [];
    while (first < batch.length) {
      const entry = batch[first]!;
      if (this.log.isGone(this.link.id, entry.seq)) first++;
      // Only the oldest entries of the log may be dropped (HintLog.remove's contract): in a batch
      // pipelined behind one still in flight, an entry that expired meanwhile (a clock jump, the
      // grace passing) is sent; the receiver refuses it if it is too old for an absent key
      // (peer-service.ts). Dropping it here left the log's count one too high for ever: the
      // batch ahead was then removed behind it (found by the simulator, seed 59).
      else if (entry.enqueuedAtMs < oldestSendableMs && (this.log.isGone(this.link.id, entry.seq - 1) || expired.at(-1)?.seq === entry.seq - 1)) {
        expired.push(entry);
        first++;
      } else break;
    }
    if (expired.length > 0) {
      // Checked here as well as by the log's limits, which may not have run yet (at start-up).
      this.log.remove(expired, true);
      for (const e of expired) this.waiters.get(e.seq)?.resolve({ delivered: false, reason: 'the log entry expired (older than the tombstone grace)' });
      this.logger.warn({ peer: this.link.id, dropped: expired.length }, 'replication-log entries older than the tombstone grace dropped, not sent; anti-entropy repairs the peer');
    }
    const wanted: number[] = [];
    for (let i = first; i < batch.length; i++) if (this.waiters.has(batch[i]!.seq)) wanted.push(i);
    return {
      first,
      records: batch.slice(first).map((e) => ({ key: e.key, record: e.record })),
      wantPrevious: wanted.map((i) => i - first),
      knownPrevious: wanted.map((i) => this.waiters.get(batch[i]!.seq)?.knownPrevious ?? noRecord),
    };
  }

  /** Sends `batch` once; resolves (never rejects) with the previous records by index, or the error. */
  private async sendOnce(batch: readonly HintEntry[]): Promise<SendResult> {
    try {
      return { ok: true, answer: await this.sendRequest(this.buildRequest(batch)) };
    } catch (error) {
      return { ok: false, error };
    }
  }

  private async sendRequest(sent: ReturnType<DeliveryLoop['buildRequest']>): Promise<BatchAnswer> {
    const previous = new Map<number, Buffer | undefined>();
    const refused = new Set<number>();
    const notReplicated = new Set<number>();
    const valueOmitted = new Set<number>();
    if (sent.records.length === 0) return { previous, refused, notReplicated, valueOmitted };
    const sentMs = this.clock.monotonicMs();
    const answer = await this.stream.request({
      batch: { fromNodeId: this.settings.selfId, records: sent.records, wantPrevious: sent.wantPrevious, knownPrevious: sent.knownPrevious, fromLog: true },
    });
    this.observer?.({ entries: sent.records.length, durationMs: this.clock.monotonicMs() - sentMs });
    (answer.ack?.previous ?? []).forEach((p, j) => previous.set(sent.first + sent.wantPrevious[j]!, p.record.length > 0 ? p.record : undefined));
    for (const index of answer.ack?.refused ?? []) refused.add(sent.first + index);
    for (const index of answer.ack?.notReplicated ?? []) notReplicated.add(sent.first + index);
    for (const j of answer.ack?.previousValueOmitted ?? []) valueOmitted.add(sent.first + sent.wantPrevious[j]!);
    return { previous, refused, notReplicated, valueOmitted };
  }

  /**
   * Sends `batch` until the peer acknowledges it, with p-retry's backoff; the previous records it
   * returned by index, or undefined if stopped first.
   */
  private async deliver(batch: readonly HintEntry[]): Promise<BatchAnswer | undefined> {
    while (!this.stopped) {
      this.backoff = new AbortController();
      try {
        return await this.retry(() => this.sendRequest(this.buildRequest(batch)), {
          minMs: this.settings.retryMinMs,
          maxMs: this.settings.retryMaxMs,
          signal: this.backoff.signal,
          onFailedAttempt: (error, attemptNumber) => {
            if (attemptNumber === 1 || attemptNumber % 20 === 0) {
              this.logger.warn({ peer: this.link.id, attempt: attemptNumber, backlog: this.log.stats(this.link.id).entries, err: error.message }, 'replication to peer failed; retrying with backoff');
            }
          },
        });
      } catch (err) {
        // Backoff cut short (peer seen again) or stopping: retry at once, or leave. Anything else
        // (an error p-retry does not retry) waits the minimum delay, so this never spins.
        if (!this.backoff.signal.aborted) {
          await sleep(this.clock, this.settings.retryMaxMs);
        }
      }
    }
    return undefined;
  }

  private failWaiters(reason: string): void {
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of waiters) w.resolve({ delivered: false, reason });
  }
}
