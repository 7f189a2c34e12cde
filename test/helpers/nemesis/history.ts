import { Status } from 'nice-grpc';
import { isOverloadRefusal } from '../../../src/common/overload.js';

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

/** A fault the schedule applied, as it happened. */
export interface FaultEvent {
  readonly startMs: number;
  endMs: number;
  readonly description: string;
}

/** Records every operation with its invocation and completion. */
export class History {
  readonly ops: Op[] = [];
  readonly faults: FaultEvent[] = [];
  private readonly t0 = performance.now();

  /** Milliseconds since the history began. */
  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  /** Records the invocation of an operation; complete it with {@link complete} or {@link fail}. */
  invoke(op: Omit<Op, 'id' | 'startMs' | 'endMs' | 'outcome'>): Op {
    const recorded: Op = { ...op, id: this.ops.length, startMs: this.now(), endMs: Number.NaN, outcome: 'pending' };
    this.ops.push(recorded);
    return recorded;
  }

  complete(op: Op, observed: Op['observed']): void {
    op.endMs = this.now();
    op.outcome = 'ok';
    op.observed = observed;
  }

  fail(op: Op, error: unknown): void {
    op.endMs = this.now();
    op.outcome = classifyError(error);
    op.error = describeError(error);
    if ((error as { unreachable?: unknown })?.unreachable === true) op.unreachable = true;
  }

  fault(description: string): FaultEvent {
    const event = { startMs: this.now(), endMs: Number.NaN, description };
    this.faults.push(event);
    return event;
  }

  endFault(event: FaultEvent): void {
    event.endMs = this.now();
  }

  /** Operations grouped by key, each group in invocation order. */
  byKey(): Map<string, Op[]> {
    const out = new Map<string, Op[]>();
    for (const op of this.ops) {
      let list = out.get(op.key);
      if (list === undefined) out.set(op.key, (list = []));
      list.push(op);
    }
    return out;
  }
}

/**
 * `failed` only when the server certainly applied nothing; every other error is `indeterminate`.
 * (The SDK resends an overload refusal until the deadline, so a refusal normally surfaces as
 * DEADLINE_EXCEEDED, i.e. indeterminate: conservative, never wrong.)
 */
export function classifyError(error: unknown): Outcome {
  const e = error as { code?: unknown; details?: unknown };
  if (typeof e?.code !== 'number') return 'indeterminate';
  if (e.code === Status.INVALID_ARGUMENT) return 'failed';
  if (typeof e.details === 'string' && isOverloadRefusal(e.code, e.details)) return 'failed';
  return 'indeterminate';
}

export function describeError(error: unknown): string {
  const e = error as { code?: unknown; details?: unknown; message?: unknown };
  if (typeof e?.code === 'number') return `${Status[e.code] ?? `STATUS_${e.code}`}: ${String(e.details ?? e.message ?? '')}`.slice(0, 300);
  return String(e?.message ?? error).slice(0, 300);
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
