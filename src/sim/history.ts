/**
 * The operations of a history, as the checker (checker.ts) judges them: shared by the
 * deterministic simulator and the fault-injection test (test/helpers/nemesis/).
 */

/**
 * The outcome of one operation, as a client can know it:
 * - `ok`: acknowledged (a put or delete by W = QUORUM replicas; a read answered by R = QUORUM);
 * - `failed`: the server certainly did not apply it (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED
 *   "node overloaded: ..." refused before anything ran);
 * - `indeterminate`: anything else (UNAVAILABLE, DEADLINE_EXCEEDED, a broken connection, ...). A
 *   write with this outcome may have been applied, now or later: a write that misses its quorum
 *   is not rolled back, it stays in the coordinator's replication log and reaches every replica.
 */
export type Outcome = 'ok' | 'failed' | 'indeterminate';

/** Which workload an operation belongs to (each key belongs to exactly one). */
export type Workload = 'unique' | 'put-delete' | 'sequential';

export type OpKind = 'put' | 'delete' | 'get';

/** One operation of the history. Times are milliseconds since the run began. */
export interface Op {
  readonly id: number;
  readonly client: number;
  readonly workload: Workload;
  readonly kind: OpKind;
  readonly key: string;
  /** The value a put writes. */
  readonly value?: string;
  /** Coordinator node id the call was sent to. */
  readonly coordinator: string;
  readonly startMs: number;
  endMs: number;
  outcome: Outcome | 'pending';
  /** Code name and details of the error, when it did not succeed. */
  error?: string;
  /** The SDK says no node was reached (connection refused / not connected): still counted indeterminate. */
  unreachable?: boolean;
  /**
   * What an acknowledged operation observed of the key's previous state: a get's value, a put's
   * old value, a delete's `found`. `null` is absent (or deleted); for a delete that found a live
   * value, `{ live: true }` (it does not say which one).
   */
  observed?: string | null | { live: true };
}

/** One line describing an operation, for violation reports. */
export function formatOp(op: Op): string {
  const what = op.kind === 'put' ? `put ${JSON.stringify(op.value)}` : op.kind;
  const observed =
    op.outcome !== 'ok'
      ? ''
      : op.kind === 'get'
        ? ` -> ${formatObserved(op.observed)}`
        : op.kind === 'put'
          ? ` (old value ${formatObserved(op.observed)})`
          : ` (found ${op.observed === null ? 'nothing' : 'a live value'})`;
  const err = op.error !== undefined ? ` [${op.error}]` : '';
  return `#${op.id} c${op.client} ${op.startMs.toFixed(1)}-${Number.isNaN(op.endMs) ? '?' : op.endMs.toFixed(1)} ms via ${op.coordinator}: ${what} ${op.outcome}${observed}${err}`;
}

export function formatObserved(observed: Op['observed']): string {
  if (observed === undefined) return '?';
  if (observed === null) return 'absent';
  if (typeof observed === 'object') return 'a live value';
  return JSON.stringify(observed);
}
