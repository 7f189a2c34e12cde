import type { ReadReplicaStreamRequest, ReadReplicaStreamResponse } from '../../gen/kvstore/internal/v1/peer.js';
import type { PeerLink } from './peer-link.js';
import { PeerStream } from './peer-stream.js';

/** Most keys in one ReadReplica call (the peer's own cap is the same). */
export const readBatchKeysMax = 1024;

interface PendingRead {
  readonly key: Buffer;
  resolve(record: Buffer | undefined): void;
  reject(err: unknown): void;
}

/**
 * Coalesces replica reads to one peer: every key asked for within the same event-loop turn goes
 * in one ReadReplica request, sent on a long-lived ReadReplicaStream. Under load this turns hundreds of small RPCs into a few batches; the
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
  ) {
    this.stream = new PeerStream((requests, options) => link.client.readReplicaStream(requests, options), link.id, callMs);
  }


  read(key: Buffer): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ key, resolve, reject });
      if (this.pending.length >= readBatchKeysMax) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    this.stream
      .request({ read: { fromNodeId: this.selfId, keys: batch.map((p) => p.key) } })
      .then(
        (answer) => {
          this.link.markContact();
          const records = answer.records?.records ?? [];
          batch.forEach((p, i) => {
            const record = records[i]?.record;
            p.resolve(record !== undefined && record.length > 0 ? record : undefined);
          });
        },
        (err: unknown) => {
          this.link.markFailure(err);
          for (const p of batch) p.reject(err);
        },
      );
  }
}
