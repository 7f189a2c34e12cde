/**
 * kvctl member: the cluster's membership as the answering node holds it (docs/membership.md).
 */
import type { NodeStatus } from '../client/index.js';
import { exitCode, type KvctlCommand, UsageError } from './kvctl-command.js';
import { formatTable, jsonLine } from './kvctl-format.js';

/** The actions of docs/membership.md that are not built yet, and what to do instead today. */
const notYet = new Set(['add', 'remove', 'replace', 'mark-dead', 'cancel', 'wait']);

/**
 * The member list: the answering node's epoch, then one row per member. The epoch is the
 * answering node's (each node holds its own copy; `--endpoints` picks the node to ask).
 */
export function formatMembers(status: NodeStatus): string {
  const rows = status.members.map((member) => [
    member.nodeId,
    status.redacted ? '(needs admin)' : member.peer === '' ? '-' : member.peer,
    member.state,
    `${(member.ownedShare * 100).toFixed(1)}%`,
    member.self ? 'self' : member.reachable ? 'yes' : 'NO',
  ]);
  return `epoch ${status.membershipEpoch} (as held by ${status.nodeId})  replication factor ${status.replicationFactor}\n` + formatTable(['ID', 'PEER', 'STATE', 'OWNS', 'REACHABLE'], rows);
}

export const memberCommand: KvctlCommand = {
  name: 'member',
  arguments: '<action> [args...]',
  summary: 'Show the cluster membership: member list',
  help: [
    'member list: the membership epoch the answering node holds (ask another with --endpoints),',
    'then every member with its peer address, state (joining, normal, leaving, removed), the',
    'share of the ring it owns (OWNS: the keys it holds a replica of,',
    'over the replication factor; the shares add up to 100%) and whether the answering node',
    'reaches it. --json prints the status object the list is made from.',
    '',
    'Members do not change by command yet (add, remove and replace are designed in',
    'docs/membership.md, not built): the member list is cluster.members in each node\'s config,',
    'and a node started with an edited list adopts it as the next epoch.',
  ].join('\n'),
  async run(context) {
    const action = context.args[0];
    if (action !== undefined && notYet.has(action)) {
      throw new UsageError(
        `member ${action}: not available yet: members do not change by command in this version (docs/membership.md is the design). ` +
          'Today the member list is cluster.members in every node\'s config; changing it moves no data (anti-entropy copies keys to their new replicas afterwards), so it is not an online operation yet.',
      );
    }
    if (action !== 'list') throw new UsageError(`member: unknown action "${action ?? ''}"; the one available is: list`);
    const status = await context.client().status();
    await context.write(context.globals.json ? jsonLine(status) : formatMembers(status));
    return exitCode.ok;
  },
};
