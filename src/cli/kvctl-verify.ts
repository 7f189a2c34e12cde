/**
 * `kvctl verify`: do the replicas of every ring range agree? (Verify RPC, read-only.)
 */
import { verifyDeadlineMsDefault, type RangeVerification, type ReplicaDigest, type VerifyReport } from '../client/index.js';
import { exitCode, type KvctlCommand } from './kvctl-command.js';
import { jsonLine } from './kvctl-format.js';

/** A ring position as 0x-prefixed 8 hex digits. */
function hashHex(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}

function describeReplica(replica: ReplicaDigest): string {
  if (replica.error !== undefined) return `${replica.nodeId} error: ${replica.error}`;
  const records = `${replica.recordCount} record${replica.recordCount === 1 ? '' : 's'}`;
  return `${replica.nodeId} ${replica.digest === '' ? '(no digest)' : replica.digest} (${records})`;
}

/** One line for a range whose replicas disagree. */
export function formatDifferingRange(range: RangeVerification): string {
  const interval = `(${hashHex(range.startExclusive)}, ${hashHex(range.endInclusive)}]`;
  const strays = range.strays.length === 0 ? '' : `; not replicas but holding records: ${range.strays.map(describeReplica).join('; ')}`;
  return `range ${range.range} ${interval}: ${range.replicas.map(describeReplica).join('; ')}${strays}`;
}

/** The human verify report: the summary line, then one line per differing range. */
export function formatVerify(report: VerifyReport): string {
  const total = report.ranges.length;
  const differing = report.ranges.filter((range) => !range.agree);
  const count = Math.max(report.differingRanges, differing.length);
  const ranges = `${total} range${total === 1 ? '' : 's'}`;
  if (count === 0) return `${ranges}, all replicas agree\n`;
  return [`${count} of ${ranges} differ`, ...differing.map(formatDifferingRange)].join('\n') + '\n';
}

export const verifyCommand: KvctlCommand = {
  name: 'verify',
  summary: 'Compare every ring range across its replicas (exit 5 if any range differs)',
  help: [
    'Asks the answering node to compare, for every ring range, the hash-tree root (digest) of',
    'each replica. Read-only. Prints "N ranges, all replicas agree", or "K of N ranges differ"',
    'and one line per differing range: its index, hash interval (start, end] of murmur3(key),',
    'and each replica\'s digest and record count (tombstones included), or why it could not be',
    'asked (such a range counts as differing). Every other member is asked too: one that is not',
    'a replica of a range but holds records in it (left behind by a membership change) is listed',
    'and makes the range differ. Refused while a membership change is in progress.',
    'Replicas converge through anti-entropy; run \'kvctl repair\' to do it now.',
    `Default --timeout for verify: ${verifyDeadlineMsDefault}ms. --json prints the VerifyReport object.`,
    'Exit 0 if every range agrees, 5 if any range differs.',
  ].join('\n'),
  async run(context) {
    const timeoutMs = context.globals.timeoutMs;
    const report = await context.client().verify(timeoutMs === undefined ? {} : { deadlineMs: timeoutMs });
    await context.write(context.globals.json ? jsonLine(report) : formatVerify(report));
    const differs = report.differingRanges > 0 || report.ranges.some((range) => !range.agree);
    return differs ? exitCode.differ : exitCode.ok;
  },
};
