import type { ReadReplicaStreamRequest, ReadReplicaStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import { countWithinBytes, keyMessageBytes, payloadBytesMax } from './message-bytes.js';
import type { PeerLink } from './peer-link.js';
import { PeerStream } from './peer-stream.js';
import type { Clock } from '../platform/clock.js';

/** Most keys in one ReadReplica call (the peer's own cap is the same). */
export const readBatchKeysMax = 1024;

interface PendingRead {
  readonly key: Buffer;
  resolve(record: Buffer | undefined): void;
  reject(err: unknown): void;
}

/**
 * Coalesces replica reads to one peer: every key asked for within the same event-loop turn goes
 * in one ReadReplica request (several if the keys exceed the link's message limit), sent on a
 * long-lived ReadReplicaStream; an answer the peer cut short at the byte bound is asked again for
 * the rest. Under load this turns hundreds of small RPCs into a few batches; the
 * profile showed per-call gRPC overhead, not LMDB, dominating quorum reads. A lone read pays
 * only a setImmediate.
 */
export class ReadBatcher {
  private pending: PendingRead[] = [];
  private scheduled = false;

  /** Reads go as messages of one long-lived stream (see PeerStream); it ends when the link closes. */
  private readonly stream: PeerStream<ReadReplicaStreamRequest, ReadReplicaStreamResponse>;

  constructor(
    private readonly link: PeerLink,
    private readonly selfId: string,
    callMs: number,
    private readonly clock: Clock,
  ) {
    this.stream = new PeerStream((requests, options) => link.client.readReplicaStream(requests, options), link.id, callMs, clock, link);
  }


  read(key: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ key, resolve, reject });
      if (this.pending.length >= readBatchKeysMax) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        this.clock.defer(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    // Requests and answers both within the link's message limit: keys split by bytes here, and
    // the peer answers a prefix within maxBytes (the rest is asked again).
    const maxBytes = payloadBytesMax(this.link.messageBytesMax);
    for (let i = 0; i < batch.length; ) {
      const n = countWithinBytes(batch, i, maxBytes, (p) => keyMessageBytes(p.key));
      this.send(batch.slice(i, i + n), maxBytes);
      i += n;
    }
  }

  /** Asks for `reads` in one message; the keys a short answer left out are asked again. */
  private send(reads: readonly PendingRead[], maxBytes: number): void {
    this.stream
      .request({ read: { fromNodeId: this.selfId, keys: reads.map((p) => p.key), maxBytes: BigInt(maxBytes) } })
      .then(
        (answer) => {
          const records = answer.records?.records ?? [];
          if (records.length === 0 || records.length > reads.length) {
            const err = new Error(`${this.link.id} answered ${records.length} records to a ReadReplica of ${reads.length} keys`);
            for (const p of reads) p.reject(err);
            return;
          }
          records.forEach((r, i) => reads[i]!.resolve(r.record.length > 0 ? r.record : undefined));
          if (records.length < reads.length) this.send(reads.slice(records.length), maxBytes);
        },
        (err: unknown) => {
          for (const p of reads) p.reject(err);
        },
      );
  }
}
