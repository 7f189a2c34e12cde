import { Status } from 'nice-grpc';
import { isOverloadRefusal } from '../../../src/common/overload.js';
import type { Op, Outcome } from '../../../src/sim/history.js';

export type { Op, OpKind, Outcome, Workload } from '../../../src/sim/history.js';
export { formatObserved, formatOp } from '../../../src/sim/history.js';

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

