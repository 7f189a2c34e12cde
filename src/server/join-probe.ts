import type { Logger } from 'pino';
import type { PeerServiceClient } from '../../gen/kvstore/internal/v1/peer.js';

/**
 * What a node started with `cluster.join` finds at its join addresses (docs/membership.md §1.2).
 * The node does not ask to be added: an operator adds it (`kvctl member add`), and the member
 * taking that command dials it. But a typo in an address, a closed port or the wrong cluster
 * is better found at start than when the add fails. So at start each address is pinged once.
 * A member answers, or refuses a node that is not a member yet, naming the members. Either way
 * the address reaches a kvstore cluster, and the log says which members it has and how to add
 * this node. If no address reaches one, a warning names what each answered.
 */

/** Each join address is given this long to answer. */
export const joinProbeTimeoutMs = 3_000;

/** What one join address answered: who (a member's Ping, or its refusal naming the members), or the error. */
export type JoinProbeResult =
  | { readonly address: string; readonly reached: true; readonly who: string; readonly placement?: Placement }
  | { readonly address: string; readonly reached: false; readonly error: string };

/** cluster.replicationFactor and cluster.vnodesPerMember (0: the member did not say). */
export interface Placement {
  readonly replicationFactor: number;
  readonly vnodesPerMember: number;
}

/** A member's refusal of a caller that is not a member (peer-service.ts checkCaller), naming the members. */
const notAMemberRefusal = /not a member of this cluster \(([^)]*)\)/;

export async function probeJoinAddresses(
  selfId: string,
  addresses: readonly string[],
  connect: (address: string) => { readonly client: Pick<PeerServiceClient, 'ping'>; close(): void },
): Promise<JoinProbeResult[]> {
  return Promise.all(
    addresses.map(async (address): Promise<JoinProbeResult> => {
      const { client, close } = connect(address);
      try {
        const answer = await client.ping({ fromNodeId: selfId }, { signal: AbortSignal.timeout(joinProbeTimeoutMs) });
        return { address, reached: true, who: `${answer.nodeId} answered, at membership epoch ${answer.membershipEpoch}`, placement: { replicationFactor: answer.replicationFactor, vnodesPerMember: answer.vnodesPerMember } };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        const members = notAMemberRefusal.exec(message)?.[1];
        return members === undefined ? { address, reached: false, error: message.slice(0, 200) } : { address, reached: true, who: `members ${members}` };
      } finally {
        close();
      }
    }),
  );
}

/**
 * Logs what the join addresses answered: how to add this node, or that none reached a cluster;
 * and a warning when a member places keys differently (`member add` would refuse this node).
 */
export function reportJoinProbe(selfId: string, peerListen: string, ours: Placement, results: readonly JoinProbeResult[], logger: Logger): void {
  const reached = results.filter((r): r is Extract<JoinProbeResult, { reached: true }> => r.reached);
  if (reached.length === 0) {
    const why = results.map((r) => `${r.address}: ${r.reached ? 'reached' : r.error}`).join('; ');
    logger.warn({ join: results }, `cluster.join: no address reaches a kvstore cluster (${why}): check cluster.join and that those members run; ${selfId} waits to be added anyway`);
    return;
  }
  const first = reached[0]!;
  logger.info({ join: results }, `cluster.join: ${first.address} reaches a kvstore cluster (${first.who}): add this node there with \`kvctl member add ${selfId} ${peerListen}\``);
  for (const r of reached) {
    for (const setting of ['replicationFactor', 'vnodesPerMember'] as const) {
      const theirs = r.placement?.[setting] ?? 0;
      if (theirs !== 0 && theirs !== ours[setting]) {
        logger.warn({ join: r }, `cluster.join: ${r.address} has cluster.${setting} ${theirs}, this node ${ours[setting]}: \`member add\` will refuse ${selfId}; start it with the members' cluster.replicationFactor and cluster.vnodesPerMember`);
      }
    }
  }
}
