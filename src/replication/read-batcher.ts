import type { PeerLink } from './peer-link.js';

/** Most keys in one ReadReplica call (the peer's own cap is the same). */
export const readBatchKeysMax = 1024;

interface PendingRead {
  readonly key: Buffer;
  resolve(record: Buffer | undefined): void;
  reject(err: unknown): void;
}

/**
 * Coalesces replica reads to one peer: every key asked for within the same event-loop turn goes
 * in one ReadReplica call. Under load this turns hundreds of small RPCs into a few batches; the
 * profile showed per-call gRPC overhead, not LMDB, dominating quorum reads. A lone read pays
 * only a setImmediate.
 */
export class ReadBatcher {
  private pending: PendingRead[] = [];
  private scheduled = false;

  constructor(
    private readonly link: PeerLink,
    private readonly selfId: string,
    private readonly callMs: number,
  ) {}

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
    this.link.client
      .readReplica({ fromNodeId: this.selfId, keys: batch.map((p) => p.key) }, { signal: AbortSignal.timeout(this.callMs) })
      .then(
        (res) => {
          this.link.markContact();
          batch.forEach((p, i) => {
            const record = res.records[i]?.record;
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
