import { compareVersions, formatVersion } from '../cluster/version.js';
import type { ReplicaContents, ReplicaRecord } from './replica-contents.js';
import { formatObserved, formatOp, type Op } from './history.js';

/**
 * The history checker. Pure: it takes the recorded operations and the replicas' final contents
 * and answers what broke. The model it checks (docs/testing.md, "What the checker checks"):
 *
 * Every key has exactly one writer, a client that runs its operations on that key one after the
 * other (the next starts after the previous one ended), so a key's operations form a sequence and
 * no real-time reasoning between clients is needed. For a point of that sequence (a QUORUM read, a
 * put's old value, a delete's `found`, the final state of a replica), let `a` be the last
 * acknowledged write before it. With W = R = QUORUM (R + W > N) the point may observe:
 *
 * - `a`'s effect (its value, or absence for a delete), or the initial absence when there is no `a`;
 * - the effect of an indeterminate write issued after `a` (it may have been applied);
 * - the effect of an indeterminate write issued *before* `a`: allowed, but reported as an anomaly
 *   ("an indeterminate write took effect late"). Such a write stays in its coordinator's log and
 *   may arrive after `a`; the rule "an acknowledged write's version is above every write
 *   acknowledged before it was sent" does not cover writes that were never acknowledged, and with
 *   a skewed clock (or an HLC dragged ahead) last-writer-wins can order it after `a`.
 *
 * Anything else is a violation: the effect of an older acknowledged write (or the initial absence)
 * instead of `a` (a lost write, a resurrected delete, an acknowledged write overwritten by an older
 * one, a stale read), the value of a write that certainly failed, a value nobody wrote, or the value
 * of a write not yet issued.
 */

export type ViolationKind =
  | 'lost-write'
  | 'resurrected-delete'
  | 'older-overwrite'
  | 'indeterminate-overwrite'
  | 'stale-read'
  | 'stale-old-value'
  | 'failed-write-visible'
  | 'phantom-value'
  | 'replicas-differ'
  | 'unexpected-exit'
  | 'node-error'
  | 'not-converged'
  | 'unclean-stop'
  // Membership agreement (the simulator's checks, docs/membership.md §2.3):
  /** Invariant A: two nodes (or incarnations) adopted different states for one epoch. */
  | 'membership-split'
  /** Invariant B: a member not declared dead more than one epoch behind, at an epoch other than the final one after heal, or back at an older epoch after a restart. */
  | 'membership-behind'
  /** A mark-dead of a member that was up and reachable was committed (each acceptor must refuse it, §2.5). */
  | 'alive-marked-dead'
  /** A member declared dead answered a client operation. */
  | 'dead-member-served'
  // Membership changes (the simulator's checks, docs/membership.md §4):
  /** After the change and the old owners' cleanup, a record on a node that does not own its key in the final ring. */
  | 'stray-copy'
  /** A node outside the final membership (removed, cancelled, never added) answered a client operation. */
  | 'removed-member-served';

export interface Violation {
  readonly kind: ViolationKind;
  readonly key?: string;
  /** One line: what broke. */
  readonly message: string;
  /** The key's operations and each replica's final record, or a node's last output lines. */
  readonly details: readonly string[];
}

/** Allowed but notable: an indeterminate write that took effect after a later acknowledged one. */
export interface Anomaly {
  readonly key: string;
  readonly message: string;
  readonly details: readonly string[];
}

export interface CheckResult {
  readonly violations: Violation[];
  readonly anomalies: Anomaly[];
  /** Keys checked, and how many of them had at least one acknowledged write. */
  readonly keysChecked: number;
  readonly keysWithAckedWrites: number;
}

/** What a point observed of a key: a value, absence (`null`), or "some live value" (a delete's found). */
export type Observation = string | null | { live: true };

type Verdict =
  | { readonly status: 'allowed' }
  | { readonly status: 'late'; readonly write: Op; readonly lastAck: Op }
  | {
      readonly status: 'violation';
      /** older-ack: an acknowledged write older than `lastAck` (or, with no `write`, the initial absence). */
      readonly cause: 'older-ack' | 'failed' | 'not-yet-issued' | 'phantom';
      readonly write?: Op;
      readonly lastAck?: Op;
    };

const isWrite = (op: Op) => op.kind === 'put' || op.kind === 'delete';

/**
 * Judges one observation against the writes issued before the point (`before`, in order, all
 * completed) and all of the key's writes (`all`, to recognise values of writes issued later).
 */
export function judge(before: readonly Op[], all: readonly Op[], observed: Observation): Verdict {
  let lastAckIndex = -1;
  for (let i = before.length - 1; i >= 0; i--) {
    if (before[i]!.outcome === 'ok') {
      lastAckIndex = i;
      break;
    }
  }
  const lastAck = lastAckIndex >= 0 ? before[lastAckIndex] : undefined;
  const verdicts: Verdict[] = [];
  const judgeMatch = (index: number): Verdict => {
    const write = before[index]!;
    if (write.outcome === 'failed') return { status: 'violation', cause: 'failed', write, lastAck };
    if (index >= lastAckIndex) return { status: 'allowed' };
    if (write.outcome === 'ok') return { status: 'violation', cause: 'older-ack', write, lastAck };
    return { status: 'late', write, lastAck: lastAck! };
  };
  if (observed === null) {
    // The initial state (before every write) is absent.
    verdicts.push(lastAck === undefined ? { status: 'allowed' } : { status: 'violation', cause: 'older-ack', lastAck });
    before.forEach((w, i) => w.kind === 'delete' && verdicts.push(judgeMatch(i)));
  } else if (typeof observed === 'object') {
    before.forEach((w, i) => w.kind === 'put' && verdicts.push(judgeMatch(i)));
    if (verdicts.length === 0) verdicts.push({ status: 'violation', cause: 'phantom', lastAck });
  } else {
    const index = before.findIndex((w) => w.kind === 'put' && w.value === observed);
    if (index >= 0) verdicts.push(judgeMatch(index));
    else {
      const later = all.find((w) => w.kind === 'put' && w.value === observed);
      verdicts.push(later !== undefined ? { status: 'violation', cause: 'not-yet-issued', write: later, lastAck } : { status: 'violation', cause: 'phantom', lastAck });
    }
  }
  return verdicts.find((v) => v.status === 'allowed') ?? verdicts.find((v) => v.status === 'late') ?? verdicts[0]!;
}

function describeWrite(op: Op | undefined): string {
  if (op === undefined) return 'the initial absence';
  return op.kind === 'delete' ? `delete #${op.id}` : `put #${op.id} ${JSON.stringify(op.value)}`;
}

export function formatRecord(record: ReplicaRecord | undefined): string {
  if (record === undefined) return 'absent';
  return `${record.tombstone ? 'tombstone' : JSON.stringify(record.value)} @${formatVersion(record.version)}`;
}

function observationOf(record: ReplicaRecord | undefined): string | null {
  return record === undefined || record.tombstone ? null : record.value;
}

/** The key's operations and every replica's final record, for a report. */
export function keyDetails(key: string, ops: readonly Op[], replicas: ReadonlyMap<string, ReplicaContents>): string[] {
  const lines = [`operations on ${JSON.stringify(key)} (times are ms since the run began):`, ...ops.map((op) => `  ${formatOp(op)}`)];
  if (replicas.size > 0) {
    lines.push('final record on each replica:');
    for (const [node, contents] of replicas) lines.push(`  ${node}: ${formatRecord(contents.get(key))}`);
  }
  return lines;
}

export interface CheckOptions {
  /**
   * Count "an indeterminate write took effect after a later acknowledged one" as a violation
   * ('indeterminate-overwrite') instead of an allowed anomaly. Off by default: no quorum system
   * with last-writer-wins can promise it (the write may sit on one partitioned replica only, with
   * a version from a clock that runs ahead); on, it shows how often it happens.
   */
  readonly lateIsViolation?: boolean;
  /** The nodes that replicate `key`; default: every node in `replicas` (a cluster of replicationFactor nodes). */
  readonly replicasOf?: (key: string) => readonly string[];
}

/** Checks every key's history against the model and the replicas' final contents. */
export function checkHistory(opsByKey: ReadonlyMap<string, readonly Op[]>, replicas: ReadonlyMap<string, ReplicaContents>, options: CheckOptions = {}): CheckResult {
  const violations: Violation[] = [];
  const anomalies: Anomaly[] = [];
  let keysWithAckedWrites = 0;
  for (const [key, ops] of opsByKey) {
    const writes = ops.filter(isWrite);
    if (writes.some((w) => w.outcome === 'ok')) keysWithAckedWrites++;
    const details = () => keyDetails(key, ops, replicas);
    const reported = new Set<string>();
    const violation = (kind: ViolationKind, message: string) => {
      if (reported.has(`${kind}:${message}`)) return;
      reported.add(`${kind}:${message}`);
      violations.push({ kind, key, message, details: details() });
    };
    const anomaly = (message: string) => {
      if (options.lateIsViolation) violation('indeterminate-overwrite', message);
      else anomalies.push({ key, message, details: details() });
    };

    // Points during the run: reads, put old values, delete found.
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.outcome !== 'ok' || op.observed === undefined) continue;
      const before = ops.slice(0, i).filter(isWrite);
      const verdict = judge(before, writes, op.observed);
      const what =
        op.kind === 'get'
          ? `QUORUM read #${op.id} via ${op.coordinator} returned ${formatObserved(op.observed)}`
          : op.kind === 'put'
            ? `put #${op.id} via ${op.coordinator} answered old value ${formatObserved(op.observed)}`
            : `delete #${op.id} via ${op.coordinator} answered found=${op.observed !== null}`;
      if (verdict.status === 'late') {
        anomaly(`${what}: the indeterminate ${describeWrite(verdict.write)} took effect after the acknowledged ${describeWrite(verdict.lastAck)}`);
      } else if (verdict.status === 'violation') {
        const kind: ViolationKind =
          verdict.cause === 'failed' ? 'failed-write-visible' : verdict.cause === 'phantom' ? 'phantom-value' : op.kind === 'get' ? 'stale-read' : 'stale-old-value';
        const why =
          verdict.cause === 'older-ack'
            ? `older than the client's own acknowledged ${describeWrite(verdict.lastAck)} (it is ${describeWrite(verdict.write)})`
            : verdict.cause === 'failed'
              ? `the value of ${describeWrite(verdict.write)}, which failed (certainly not applied)`
              : verdict.cause === 'not-yet-issued'
                ? `the value of ${describeWrite(verdict.write)}, issued only later`
                : 'a value nobody wrote to this key';
        violation(kind, `${what}: ${why}`);
      }
    }

    // The final state, replica by replica (replicas holding the same record are judged once).
    const groups = new Map<string, { record: ReplicaRecord | undefined; nodes: string[] }>();
    const holders = options.replicasOf?.(key);
    for (const [node, contents] of replicas) {
      if (holders !== undefined && !holders.includes(node)) continue;
      const record = contents.get(key);
      const id = formatRecord(record);
      const group = groups.get(id);
      if (group === undefined) groups.set(id, { record, nodes: [node] });
      else group.nodes.push(node);
    }
    for (const { record, nodes } of groups.values()) {
      const verdict = judge(writes, writes, observationOf(record));
      const where = `final record on ${nodes.join(', ')} is ${formatRecord(record)}`;
      if (verdict.status === 'late') {
        anomaly(`${where}: the indeterminate ${describeWrite(verdict.write)} took effect after the acknowledged ${describeWrite(verdict.lastAck)}`);
      } else if (verdict.status === 'violation') {
        if (verdict.cause === 'failed') violation('failed-write-visible', `${where}: the value of ${describeWrite(verdict.write)}, which failed`);
        else if (verdict.cause === 'phantom' || verdict.cause === 'not-yet-issued') violation('phantom-value', `${where}: a value nobody wrote to this key`);
        else if (verdict.lastAck?.kind === 'delete') {
          violation('resurrected-delete', `acknowledged ${describeWrite(verdict.lastAck)} resurrected: ${where} (${describeWrite(verdict.write)})`);
        } else if (record === undefined || record.tombstone) {
          violation('lost-write', `acknowledged ${describeWrite(verdict.lastAck)} lost: ${where} (${describeWrite(verdict.write)})`);
        } else {
          violation('older-overwrite', `acknowledged ${describeWrite(verdict.lastAck)} overwritten by the older ${describeWrite(verdict.write)}: ${where}`);
        }
      }
    }
  }

  // Keys on a replica that no client ever wrote.
  const known = new Set(opsByKey.keys());
  const strays = new Map<string, string[]>();
  for (const [node, contents] of replicas) {
    for (const key of contents.keys()) {
      if (known.has(key)) continue;
      const list = strays.get(key);
      if (list === undefined) strays.set(key, [node]);
      else list.push(node);
    }
  }
  for (const [key, nodes] of [...strays].slice(0, 20)) {
    violations.push({ kind: 'phantom-value', key, message: `key ${JSON.stringify(key)} on ${nodes.join(', ')} was never written by any client`, details: keyDetails(key, [], replicas) });
  }
  if (strays.size > 20) violations.push({ kind: 'phantom-value', message: `${strays.size - 20} more keys nobody wrote`, details: [] });

  return { violations, anomalies, keysChecked: opsByKey.size, keysWithAckedWrites };
}

/**
 * Keys whose records differ between replicas (value, tombstone or version), with each replica's
 * record and the key's history: after heal, drained logs and repair, every replica must hold
 * exactly the same records.
 */
export function checkReplicasIdentical(
  opsByKey: ReadonlyMap<string, readonly Op[]>,
  replicas: ReadonlyMap<string, ReplicaContents>,
  reportKeysMax = 20,
  replicasOf?: (key: string) => readonly string[],
): Violation[] {
  const all = [...replicas.values()];
  if (all.length < 2) return [];
  const differing: string[] = [];
  const keys = new Set<string>();
  for (const m of all) for (const k of m.keys()) keys.add(k);
  for (const key of keys) {
    const holders = replicasOf?.(key);
    const maps = holders === undefined ? all : [...replicas].filter(([node]) => holders.includes(node)).map(([, m]) => m);
    const records = maps.map((m) => m.get(key));
    const first = records[0];
    const same = records.every(
      (r) =>
        (r === undefined && first === undefined) ||
        (r !== undefined && first !== undefined && r.tombstone === first.tombstone && r.value === first.value && compareVersions(r.version, first.version) === 0),
    );
    if (!same) differing.push(key);
  }
  differing.sort();
  const out: Violation[] = differing.slice(0, reportKeysMax).map((key) => ({
    kind: 'replicas-differ' as const,
    key,
    message: `replicas differ after heal and repair: ${[...replicas].map(([node, c]) => `${node} ${formatRecord(c.get(key))}`).join(', ')}`,
    details: keyDetails(key, opsByKey.get(key) ?? [], replicas),
  }));
  if (differing.length > reportKeysMax) {
    out.push({ kind: 'replicas-differ', message: `${differing.length} keys differ between replicas in all (the first ${reportKeysMax} are reported)`, details: [] });
  }
  return out;
}
