/**
 * kvctl member: the cluster's membership as the answering node holds it (docs/membership.md).
 */
import type { NodeStatus } from '../client/index.js';
import { formatCount, formatSeconds, type ProgressOutput, ProgressBar, renderBar } from '../bench/progress-bar.js';
import { exitCode, type KvctlCommand, type KvctlContext, UsageError } from './kvctl-command.js';
import { formatTable, jsonLine } from './kvctl-format.js';

/** The actions of docs/membership.md that are not built yet, and what to do instead today. */

/** How often `member add` and `member wait` look at the change in progress. */
const waitPollMs = 1000;
/**
 * Streaming that has not moved for this long gets a hint: a joiner that cannot reach a member
 * retries quietly, and the bar alone sat at 0% with no clue why (a cluster whose members had
 * agreed on a peer address of 127.0.0.1:0).
 */
export const stallHintMs = 30_000;

/** What `member wait` says once a change's streaming has not moved for `stalledMs`. */
export function stalledChangeHint(status: NodeStatus, stalledMs: number): string {
  const unreachable = status.members.filter((m) => !m.self && !m.reachable).map((m) => m.nodeId);
  return (
    `kvctl: no streaming progress for ${formatSeconds(stalledMs / 1000)}. A member gaining ranges must reach every member at the peer ` +
    'address `kvctl member list` shows (not a port 0, not an address that resolves only on its own host); its log names the ' +
    'member it cannot reach ("peer unreachable"). The change goes on when it can; Ctrl-C stops only the waiting.' +
    (unreachable.length === 0 ? '' : ` Unreachable from ${status.nodeId} now: ${unreachable.join(', ')}.`)
  );
}

/**
 * The member list: the answering node's epoch, then one row per member. The epoch is the
 * answering node's (each node holds its own copy; `--endpoints` picks the node to ask).
 */
export function formatMembers(status: NodeStatus): string {
  const rows = status.members.map((member) => [
    member.nodeId,
    status.redacted ? '(needs admin)' : member.peer === '' ? '-' : member.peer,
    member.dead ? `${member.state} DEAD` : member.state,
    `${(member.ownedShare * 100).toFixed(1)}%`,
    member.self ? 'self' : member.reachable ? 'yes' : 'NO',
  ]);
  const p = status.membershipChangeProgress;
  const change =
    status.membershipChange === undefined
      ? ''
      : `change: ${status.membershipChange}` + (p === undefined || p.transfersTotal === 0 ? '' : ` (${p.transfersTotal - p.transfersDone} of ${p.transfersTotal} ranges pending, ${(p.bytes / 2 ** 20).toFixed(1)} MiB received)`) + '\n';
  return `epoch ${status.membershipEpoch} (as held by ${status.nodeId})  replication factor ${status.replicationFactor}\n` + change + formatTable(['ID', 'PEER', 'STATE', 'OWNS', 'REACHABLE'], rows);
}

export const memberCommand: KvctlCommand = {
  name: 'member',
  arguments: '<action> [args...]',
  summary: 'The cluster membership: member list | add | remove | replace | cancel | wait | mark-dead',
  help: [
    'member list: the membership epoch the answering node holds (ask another with --endpoints),',
    'then every member with its peer address, state (joining, normal, leaving, removed), the',
    'share of the ring it owns (OWNS: the keys it holds a replica of,',
    'over the replication factor; the shares add up to 100%) and whether the answering node',
    'reaches it; DEAD marks a member declared dead. --json prints the status object the list is made from.',
    '',
    'member add <id> <peer host:port>: add a node started with cluster.join (admin). Every',
    'member must agree; the node then receives every range it will own, streamed from their',
    'replicas while writes go to both old and new owners; reads move to it once all its ranges',
    'are complete, and the old owners delete what they no longer own. Waits for the change to',
    'complete, showing its progress (Ctrl-C stops the waiting, not the change).',
    'member remove <id>: remove a member (admin). Its ranges are streamed to the members that',
    'take them over, from it while it is up (it keeps serving until reads have moved, then',
    'answers UNAVAILABLE and delivers its replication log), or from the surviving replicas once',
    'it is dead. A member no member has reached for membership.deadAfterSeconds is declared',
    'dead first, by agreement (as mark-dead). Then stop it and wipe its data dir.',
    'member replace <old id> <new id> <peer host:port>: a new node (started with cluster.join)',
    'takes over the old member\'s tokens, so only the old member\'s ranges move, all to it',
    '(an old member that is gone is declared dead first, as for remove).',
    'member cancel: cancel the change in progress while it is pending (admin).',
    'member wait: wait for the change in progress to complete.',
    '',
    'member mark-dead <id>: declare a member that is gone for good dead (admin). Every other',
    'member must agree, and each refuses if it reached the member within the last 30 s. A dead',
    'member is left out of agreement, replication and tombstone GC (which it would otherwise',
    'hold back for ever), and its requests are refused: never start it again on its data dir.',
    'It still owns its ranges (with one replica fewer) until it is removed or replaced.',
    '',
  ].join('\n'),
  async run(context) {
    const action = context.args[0];
    if (action === 'mark-dead') {
      const id = context.args[1];
      if (id === undefined || context.args.length > 2) throw new UsageError('member mark-dead takes one member id: kvctl member mark-dead <id>');
      const result = await context.client().changeMembership({ kind: 'mark-dead', nodeId: id });
      await context.write(context.globals.json ? jsonLine(result) : `${result.description} (epoch ${result.epoch})`);
      return exitCode.ok;
    }
    if (action === 'add') {
      const [, id, peer] = context.args;
      if (id === undefined || peer === undefined || context.args.length > 3) throw new UsageError('member add takes a member id and its peer address: kvctl member add <id> <host:port>');
      const result = await context.client().changeMembership({ kind: 'add', nodeId: id, peer });
      await context.write(context.globals.json ? jsonLine(result) : `${result.description} (epoch ${result.epoch})\n`);
      return waitForChange(context);
    }
    if (action === 'remove') {
      const [, id] = context.args;
      if (id === undefined || context.args.length > 2) throw new UsageError('member remove takes one member id: kvctl member remove <id>');
      const result = await context.client().changeMembership({ kind: 'remove', nodeId: id });
      await context.write(context.globals.json ? jsonLine(result) : `${result.description} (epoch ${result.epoch})\n`);
      return waitForChange(context);
    }
    if (action === 'replace') {
      const [, oldId, newId, peer] = context.args;
      if (oldId === undefined || newId === undefined || peer === undefined || context.args.length > 4) {
        throw new UsageError('member replace takes the old member id, the new one and its peer address: kvctl member replace <old id> <new id> <host:port>');
      }
      const result = await context.client().changeMembership({ kind: 'replace', oldNodeId: oldId, newNodeId: newId, peer });
      await context.write(context.globals.json ? jsonLine(result) : `${result.description} (epoch ${result.epoch})\n`);
      return waitForChange(context);
    }
    if (action === 'cancel') {
      if (context.args.length > 1) throw new UsageError('member cancel takes no arguments');
      const result = await context.client().changeMembership({ kind: 'cancel' });
      await context.write(context.globals.json ? jsonLine(result) : `${result.description} (epoch ${result.epoch})`);
      return exitCode.ok;
    }
    if (action === 'wait') {
      if (context.args.length > 1) throw new UsageError('member wait takes no arguments');
      return waitForChange(context);
    }
    if (action !== 'list') throw new UsageError(`member: unknown action "${action ?? ''}"; available: list, add, remove, replace, cancel, wait, mark-dead`);
    const status = await context.client().status();
    await context.write(context.globals.json ? jsonLine(status) : formatMembers(status));
    return exitCode.ok;
  },
};

/**
 * Waits until the answering node has no membership change in progress, showing the change and
 * its streaming progress (a bar on a terminal, a line every few seconds otherwise). Exit 0 once
 * it is over (completed, or cancelled: the member list says which).
 */
async function waitForChange(context: KvctlContext): Promise<number> {
  const bar = new ProgressBar(context.io.stderr as ProgressOutput);
  const client = context.client();
  // Time left: bytes left at the rate seen since this command first saw bytes move.
  let first: { atMs: number; bytes: number } | undefined;
  // When the progress last moved, and whether this stall was already explained.
  let moved = { atMs: Date.now(), at: '' };
  let hinted = false;
  for (;;) {
    const status = await client.status();
    if (status.membershipChange === undefined) {
      bar.done(`no membership change in progress at epoch ${status.membershipEpoch}`);
      return exitCode.ok;
    }
    const p = status.membershipChangeProgress;
    const fraction = p === undefined || p.transfersTotal === 0 ? 0 : p.transfersDone / p.transfersTotal;
    const bytes = p?.bytes ?? 0;
    if (first === undefined && bytes > 0) first = { atMs: Date.now(), bytes };
    const elapsedS = first === undefined ? 0 : (Date.now() - first.atMs) / 1000;
    const rate = elapsedS > 0 ? (bytes - first!.bytes) / elapsedS : 0;
    // Bytes in all: bytes so far over the fraction of ranges done (ranges differ in size: an estimate).
    const left = rate > 0 && fraction > 0 && fraction < 1 ? `  ~${formatSeconds((bytes / fraction - bytes) / rate)} left` : '';
    const at = `${p?.transfersDone ?? 0}/${bytes}/${p?.keys ?? 0}`;
    if (at !== moved.at) {
      moved = { atMs: Date.now(), at };
      hinted = false;
    } else if (!hinted && Date.now() - moved.atMs >= stallHintMs) {
      hinted = true;
      bar.done();
      context.io.stderr.write(`${stalledChangeHint(status, Date.now() - moved.atMs)}\n`);
    }
    bar.update(`${renderBar(fraction)} ${(fraction * 100).toFixed(0)}%  ${formatCount(p?.keys ?? 0)} keys  ${(bytes / 2 ** 20).toFixed(1)} MiB${left}  ${status.membershipChange}`);
    await new Promise((resolve) => setTimeout(resolve, waitPollMs));
  }
}
