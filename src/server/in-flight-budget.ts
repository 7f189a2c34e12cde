import type { BatchOperation, BatchResult } from '../../gen/kvstore/v1/kvstore.js';
import { overloadedDetailsPrefix } from '../common/overload.js';
import { ResourceLimitError } from '../replication/errors.js';

/**
 * Bytes charged per operation on top of its key and value: the promises, deadline and
 * replication bookkeeping an operation holds while it runs, so that many tiny operations count
 * too. An estimate, not a measurement of any one operation.
 */
export const operationOverheadBytes = 256;

/** What one operation charges against the budget. */
export function operationBytes(keyBytes: number, valueBytes: number): number {
  return keyBytes + valueBytes + operationOverheadBytes;
}

/** The bytes an operation's answer holds: the value a get found or a put replaced, or an error's message. */
export function resultBytes(result: BatchResult): number {
  return (result.get?.value.length ?? 0) + (result.put?.value.length ?? 0) + (result.error?.message.length ?? 0);
}

/** What one Batch or OperationStream operation charges (one with nothing set: the overhead). */
export function batchOperationBytes(op: BatchOperation | undefined): number {
  return operationBytes((op?.put ?? op?.get ?? op?.delete)?.key.length ?? 0, op?.put?.value.length ?? 0);
}

/**
 * The node-wide budget of request bytes being worked on (`limits.maxInFlightBytes`): the keys and
 * values of every public put, get and delete received and not yet answered, whichever call
 * carried it, and the answers of Batch and OperationStream operations from when they are known
 * until they are handed to gRPC (`charge`). Each byte of a value in flight is held several times over (request, record,
 * replication log entry, messages to peers), so without a bound a burst of large writes, or a
 * peer that stopped answering while clients kept writing, could run a node out of memory.
 *
 * Two ways in:
 * - `tryAcquire` for unary and Batch calls, which the node has already read whole: refused at
 *   once (RESOURCE_EXHAUSTED; nothing was applied, a retry later is safe).
 * - `acquire` for OperationStream messages: waits, first come first served, and while it waits
 *   the stream is not read, so gRPC's flow control holds the client back instead of an error.
 *
 * Whatever the size, a request is let in when nothing else is in flight, so a request larger
 * than the budget is slow to get in, never refused for ever.
 */
export class InFlightBudget {
  private used = 0;
  private readonly waiters: { readonly bytes: number; readonly resolve: () => void }[] = [];
  /** Unary and Batch calls refused since start, for /metrics. */
  refused = 0;
  /** Stream messages that had to wait for room since start, for /metrics. */
  waited = 0;

  constructor(readonly maxBytes: number) {}

  /** Bytes in flight now. */
  get inFlightBytes(): number {
    return this.used;
  }

  /** Takes `bytes` or throws ResourceLimitError; nobody waiting is overtaken. */
  tryAcquire(bytes: number): void {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return;
    }
    this.refused++;
    throw new ResourceLimitError(
      `${overloadedDetailsPrefix} ${this.used} bytes of requests in flight, and this one needs ${bytes} more (limits.maxInFlightBytes = ${this.maxBytes}); nothing was applied, retry with backoff`,
    );
  }

  /**
   * Takes `bytes` once they fit, after those waiting before it. Rejects with the signal's reason
   * if `signal` aborts first (then nothing was taken).
   */
  async acquire(bytes: number, signal: AbortSignal): Promise<void> {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return;
    }
    signal.throwIfAborted();
    this.waited++;
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        bytes,
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        // The one ahead may have been what held the others back.
        this.admitWaiters();
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /**
   * Counts `bytes` that are already in memory (an operation's answer, known once it has run),
   * even past the budget: what comes next waits or is refused until they are given back.
   */
  charge(bytes: number): void {
    this.used += bytes;
  }

  /**
   * Whether an operation of a call already let in may start: the budget, less `heldBytes` (what
   * its own call took to get in, which may alone exceed the budget), is not full.
   */
  hasRoomBeside(heldBytes: number): boolean {
    return this.used - heldBytes < this.maxBytes;
  }

  /** Gives back what an acquire or charge took, letting in waiters that now fit. */
  release(bytes: number): void {
    this.used -= bytes;
    this.admitWaiters();
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.maxBytes;
  }

  private admitWaiters(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const waiter = this.waiters.shift()!;
      this.used += waiter.bytes;
      waiter.resolve();
    }
  }
}
