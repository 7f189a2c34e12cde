/**
 * `kvctl repair`: run an anti-entropy round now on every endpoint, one node after another.
 *
 * Repair runs only the answering node's exchanges (with each of its peers), so unlike the other
 * commands this one does not stop at the first endpoint that answers: it calls every endpoint of
 * --endpoints, each through its own single-endpoint client (no failover to another node).
 */
import { KvClient, KvError, repairDeadlineMsDefault, type PeerRepair } from '../client/index.js';
import { oneLine } from '../client/errors.js';
import { exitCode, type KvctlCommand, type KvctlContext } from './kvctl-command.js';
import { formatTable, jsonLine } from './kvctl-format.js';

/** Longest wait for the Status call that names the node behind an endpoint. */
const statusTimeoutMsMax = 5000;

/** What happened on one endpoint. */
export interface NodeRepairResult {
  endpoint: string;
  /** The node's id, when its Status answered. */
  nodeId?: string;
  /** The exchanges, when Repair answered. */
  peers?: PeerRepair[];
  /** Why Repair could not be run there (the call failed). */
  error?: string;
  /** True when the endpoint could not be connected to. */
  unreachable?: boolean;
}

function nodeLabel(result: NodeRepairResult): string {
  return result.nodeId === undefined ? result.endpoint : `${result.nodeId} (${result.endpoint})`;
}

/** The human report of one endpoint: a heading, then one row per peer. */
export function formatNodeRepair(result: NodeRepairResult): string {
  const label = nodeLabel(result);
  if (result.error !== undefined) return `${label}: FAILED: ${result.error}\n`;
  const peers = result.peers ?? [];
  if (peers.length === 0) return `${label}: no peers\n`;
  const pulled = peers.reduce((sum, peer) => sum + peer.recordsPulled, 0);
  const pushed = peers.reduce((sum, peer) => sum + peer.recordsPushed, 0);
  const rows = peers.map((peer) => [
    peer.nodeId,
    String(peer.rangesCompared),
    String(peer.rangesDiffering),
    String(peer.recordsPulled),
    String(peer.recordsPushed),
    String(peer.bytesTransferred),
    String(peer.durationMs),
    peer.error === undefined ? 'ok' : `FAILED: ${peer.error}`,
  ]);
  const table = formatTable(['PEER', 'RANGES', 'DIFFERING', 'PULLED', 'PUSHED', 'BYTES', 'MS', 'RESULT'], rows)
    .trimEnd()
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
  return `${label}: ${peers.length} peer${peers.length === 1 ? '' : 's'}, ${pulled} records pulled, ${pushed} pushed\n${table}\n`;
}

/** Runs Status (to name the node) then Repair on one endpoint. Throws only non-KvErrors. */
async function repairOne(context: KvctlContext, endpoint: string): Promise<NodeRepairResult> {
  const timeoutMs = context.globals.timeoutMs;
  const client = new KvClient({ endpoints: [endpoint], ...(timeoutMs === undefined ? {} : { deadlineMs: timeoutMs }), ...(context.globals.tls === undefined ? {} : { tls: context.globals.tls }) });
  const result: NodeRepairResult = { endpoint };
  try {
    try {
      const status = await client.status({ deadlineMs: Math.min(timeoutMs ?? statusTimeoutMsMax, statusTimeoutMsMax) });
      result.nodeId = status.nodeId;
    } catch (error) {
      if (!KvError.isKvError(error)) throw error;
      // Nothing listening there: no point in asking for a repair. Any other answer: try anyway.
      if (error.unreachable) return { ...result, error: error.message, unreachable: true };
    }
    const report = await client.repair(timeoutMs === undefined ? {} : { deadlineMs: timeoutMs });
    result.peers = report.peers;
    return result;
  } catch (error) {
    if (!KvError.isKvError(error)) throw error;
    return { ...result, error: error.message, ...(error.unreachable ? { unreachable: true } : {}) };
  } finally {
    client.close();
  }
}

export const repairCommand: KvctlCommand = {
  name: 'repair',
  summary: 'Run anti-entropy now on every --endpoints node in turn; print records copied',
  help: [
    'Asks each node given in --endpoints (every one, in order, one at a time; not just the first',
    'that answers) to run an anti-entropy exchange now with each of its peers, the exchange it',
    'otherwise runs every antiEntropy.intervalSeconds. List every node to repair every pair.',
    'Prints, per node, per peer: ranges compared and differing, records pulled (copied from the',
    'peer to the node) and pushed (from the node to the peer), and whether the exchange completed.',
    `Default --timeout for repair: ${repairDeadlineMsDefault}ms per node.`,
    '--json prints {"nodes": [{"endpoint", "nodeId", "peers": [...]} or {"endpoint", "error", "unreachable"?}]}.',
    'Exit 3 if any exchange or any node failed (4 if no node could be connected to).',
    "Check the result with 'kvctl verify'.",
  ].join('\n'),
  async run(context) {
    const endpoints = [...new Set(context.globals.endpoints)];
    const results: NodeRepairResult[] = [];
    for (const endpoint of endpoints) {
      const result = await repairOne(context, endpoint);
      results.push(result);
      if (!context.globals.json) await context.write(formatNodeRepair(result));
    }
    if (context.globals.json) {
      await context.write(jsonLine({ nodes: results }));
    }

    const failedNodes = results.filter((result) => result.error !== undefined);
    const failedExchanges = results.flatMap((result) =>
      (result.peers ?? []).filter((peer) => peer.error !== undefined).map((peer) => `${result.nodeId ?? result.endpoint} <-> ${peer.nodeId}`),
    );
    if (failedNodes.length === 0 && failedExchanges.length === 0) return exitCode.ok;
    // The errors themselves are in the report above; name what failed.
    const counts = [
      failedNodes.length === 0
        ? ''
        : `${failedNodes.length} of ${results.length} node${results.length === 1 ? '' : 's'} failed (${failedNodes.map((result) => result.endpoint).join(', ')})`,
      failedExchanges.length === 0
        ? ''
        : `${failedExchanges.length} exchange${failedExchanges.length === 1 ? '' : 's'} failed (${failedExchanges.join(', ')})`,
    ].filter((part) => part !== '');
    context.io.stderr.write(`kvctl: ${oneLine(`repair: ${counts.join('; ')}`)}\n`);
    return results.every((result) => result.unreachable === true) ? exitCode.unreachable : exitCode.server;
  },
};
