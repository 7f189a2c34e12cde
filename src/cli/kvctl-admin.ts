/**
 * kvctl operator commands: backup, status.
 */
import type { BackupStatus, MemberStatus, NodeStatus } from '../client/index.js';
import { oneLine } from '../client/errors.js';
import { exitCode, type KvctlCommand } from './kvctl-command.js';
import { formatAgo, formatBytes, formatDuration, formatTable, jsonLine } from './kvctl-format.js';

/** A backup copies the whole LMDB environment: give it far longer than a key lookup. */
const backupTimeoutMsDefault = 10 * 60 * 1000;

function describeBackup(backup: BackupStatus): string {
  return `${backup.path} (${backup.keyCount} keys, ${formatBytes(backup.bytes)}, taken ${backup.createdAt.toISOString()})`;
}

export const backupCommand: KvctlCommand = {
  name: 'backup',
  summary: 'Back up the answering node (--all: every reachable node) into its backupDir',
  options: [{ flags: '--all', description: 'back up every reachable member' }],
  defaultTimeoutMs: backupTimeoutMsDefault,
  help: [
    'Takes a hot, consistent copy of the answering node\'s data into its backupDir, and prints',
    'where it is. --all backs up every reachable member; then it exits 3 if any member failed.',
    'The copy is on the node\'s disk; restore it there with',
    '  kvstore restore --from <path> --config node.yaml   (node stopped)',
    `Default --timeout for backup: ${backupTimeoutMsDefault}ms. --json prints the BackupStatus object.`,
  ].join('\n'),
  async run(context) {
    const allNodes = context.flags['all'] === true;
    const backup = await context.client().backup({ allNodes });
    const failed = backup.nodes.filter((node) => node.error !== '');
    if (context.globals.json) {
      await context.write(jsonLine(backup));
    } else if (!allNodes) {
      await context.write(`backup of ${backup.nodeId}: ${describeBackup(backup)}\n`);
    } else {
      const rows = backup.nodes.map((node) =>
        node.error === ''
          ? [node.nodeId, 'ok', String(node.keyCount), formatBytes(node.bytes), node.createdAt.toISOString(), node.path]
          : [node.nodeId, 'FAILED', '-', '-', '-', node.error],
      );
      await context.write(formatTable(['NODE', 'RESULT', 'KEYS', 'SIZE', 'TAKEN', 'PATH / ERROR'], rows));
    }
    if (failed.length > 0) {
      const list = failed.map((node) => `${node.nodeId}: ${node.error}`).join('; ');
      context.io.stderr.write(`kvctl: backup failed on ${failed.length} of ${backup.nodes.length} nodes: ${list}\n`);
      return exitCode.server;
    }
    return exitCode.ok;
  },
};

/** The human status report: the node, then one row per member. */
export function formatStatus(status: NodeStatus, now: Date): string {
  const summary = [
    `node ${status.nodeId}  version ${status.version || '?'}  up ${formatDuration(status.uptimeSeconds)}  listen ${status.listen}`,
    `keys ${status.keyCount} (records incl. tombstones ${status.recordCount})  replication factor ${status.replicationFactor}  data ${status.redacted ? '(needs admin)' : status.dataDir}`,
    `tombstone GC: ${status.tombstonesPurged} purged since start${status.tombstoneGcHeldBack === undefined ? '' : `; held back: ${status.tombstoneGcHeldBack}`}  membership epoch ${status.membershipEpoch}`,
    ...(status.membershipChange === undefined ? [] : [`membership change: ${status.membershipChange}`]),
    ...status.warnings.map((warning) => `WARNING: ${warning}`),
    ...(status.redacted ? ['(redacted: without the admin permission, peer addresses, paths and backlogs are not shown)'] : []),
  ].join('\n');
  const rows = status.members.map((member) => [
    member.nodeId,
    member.peer,
    member.self ? 'yes' : 'no',
    member.self ? '-' : member.reachable ? 'yes' : 'NO',
    String(member.backlogEntries),
    formatBytes(member.backlogBytes),
    member.backlogEntries === 0 ? '-' : formatDuration(member.backlogOldestAgeMs / 1000),
    member.self ? '-' : formatAgo(member.lastContact, now),
    String(member.droppedEntries),
    member.self ? '-' : formatExchange(member, now),
    member.self ? '-' : String(member.lastExchangeRepaired),
  ]);
  const table = formatTable(
    ['ID', 'PEER', 'SELF', 'REACHABLE', 'BACKLOG', 'BACKLOG BYTES', 'OLDEST', 'LAST CONTACT', 'DROPPED', 'LAST EXCHANGE', 'REPAIRED'],
    rows,
  );
  const failures = status.members
    .filter((member) => !member.self && member.lastExchangeError !== undefined)
    .map((member) => `last anti-entropy exchange with ${member.nodeId} failed: ${oneLine(member.lastExchangeError ?? '')}`);
  return `${summary}\n\n${table}${failures.map((line) => `${line}\n`).join('')}`;
}

/** Age of the last anti-entropy exchange, flagged when the last attempt failed. */
function formatExchange(member: MemberStatus, now: Date): string {
  const age = formatAgo(member.lastExchange, now);
  return member.lastExchangeError === undefined ? age : `${age} (FAILED)`;
}

export const statusCommand: KvctlCommand = {
  name: 'status',
  summary: 'Show the answering node and its view of every member (reachability, backlog, repair)',
  help: [
    'Shows the node that answers (the first reachable endpoint): id, version, uptime, key count,',
    'and for each member: peer address, reachability, the replication backlog towards it',
    '(entries, bytes, age of the oldest), last successful contact, entries dropped, and the last',
    'anti-entropy exchange with it: LAST EXCHANGE is its age ("(FAILED)" if the latest attempt',
    'failed; the error is printed below the table), REPAIRED the records it copied (both ways).',
    'Use --endpoints host:port to ask one particular node. --json prints the raw status object.',
  ].join('\n'),
  async run(context) {
    const status = await context.client().status();
    await context.write(context.globals.json ? jsonLine(status) : formatStatus(status, new Date()));
    return exitCode.ok;
  },
};
