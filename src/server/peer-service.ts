import { type CallContext, ServerError, Status } from 'nice-grpc';
import type { BackupResponse, PeerServiceImplementation } from '../../gen/kvstore/internal/v1/peer.js';
import { InvalidRequestError } from '../replication/errors.js';
import type { MembershipAcceptor } from '../replication/membership-acceptor.js';
import { createMembershipRpcs } from '../replication/membership-rpcs.js';
import { createReplica, replicateStreamMessagesInFlightMax, type ReplicaDeps } from '../replication/replica.js';
import { rejectIfMalformed } from './malformed-requests.js';
import { inOrder, untilClosing } from './stream-messages.js';
import { nodeIdentityUriPrefix, peerIdentityMetadataKey } from './tls-credentials.js';

export { peerAnswerBytesMax, purgeTombstonesMax, readReplicaKeysMax, replicateStreamMessagesInFlightMax } from '../replication/replica.js';

export interface PeerServiceDeps extends ReplicaDeps {
  /**
   * Member ids allowed to call (anything else is a misconfigured node, or a member declared dead
   * or removed: fenced). Read per call: the membership can change while the node runs.
   */
  readonly members: {
    has(id: string): boolean;
    /** Any id of the membership, dead and removed ones too: they may still Ping and ask GetMembership, to learn their fate. */
    knows?(id: string): boolean;
  } & Iterable<string>;
  /**
   * peerTls is on: a caller is the node its certificate names (tls-credentials.ts puts it in the
   * metadata), and a request's from_node_id must be that node. Off (default): from_node_id is trusted.
   */
  readonly identityFromCertificate?: boolean;
  /** Throws if this node must not serve (shutting down). */
  readonly assertServing: () => void;
  backup(): Promise<BackupResponse>;
  /** Aborted when the node stops: stream handlers finish the message in progress and end. */
  readonly closing: AbortSignal;
  /** This node's membership acceptor; without it the agreement RPCs answer UNIMPLEMENTED. */
  readonly agreement?: MembershipAcceptor;
}

/**
 * The internal node-to-node service, served on peerListen only: checks who is calling, frames
 * the two streams, and hands every request to the replica side (src/replication/replica.ts).
 */
export function createPeerService(deps: PeerServiceDeps): PeerServiceImplementation {
  const replica = createReplica(deps);
  /**
   * Every handler's caller check. With peerTls the caller's identity is its certificate's (never a
   * request field): a certificate naming no member is refused, and so is a from_node_id other
   * than the certificate's, so n2's certificate cannot act as n3.
   */
  const checkCaller = (from: string, context: CallContext, anyMember = false) => {
    const admits = (id: string) => deps.members.has(id) || (anyMember && deps.members.knows?.(id) === true);
    if (deps.identityFromCertificate) {
      const certified = context.metadata.get(peerIdentityMetadataKey);
      if (certified === undefined) throw new ServerError(Status.UNAUTHENTICATED, `the caller's certificate names no kvstore node (a SAN URI ${nodeIdentityUriPrefix}<member id>)`);
      if (!admits(certified)) throw new ServerError(Status.PERMISSION_DENIED, `certificate of node "${certified}", which is not a member of this cluster (${[...deps.members].join(', ')})`);
      if (from !== certified) throw new ServerError(Status.PERMISSION_DENIED, `from_node_id "${from}" does not match the caller's certificate, which names node "${certified}"`);
      return;
    }
    if (!admits(from)) {
      const fenced = deps.members.knows?.(from) === true;
      throw new InvalidRequestError(
        fenced
          ? `node "${from}" was declared dead or removed: its requests are refused (live members: ${[...deps.members].join(', ')})`
          : `node "${from}" is not a member of this cluster (${[...deps.members].join(', ')})`,
      );
    }
  };
  /** The check every request but Ping (and Backup) passes first. */
  const admit = (from: string, context: CallContext) => {
    deps.assertServing();
    checkCaller(from, context);
  };
  const membership = deps.agreement === undefined ? undefined : createMembershipRpcs(deps.agreement);
  /**
   * The agreement RPCs' check: the caller only, not assertServing, since a node that does not
   * serve yet (catching up, not joined: docs/membership.md §1.2) must still take part.
   */
  const agreement = (from: string, context: CallContext, anyMember = false) => {
    checkCaller(from, context, anyMember);
    if (membership === undefined) throw new ServerError(Status.UNIMPLEMENTED, 'membership agreement is not enabled on this node');
    return membership;
  };
  return {
    async replicate(request, context) {
      admit(request.fromNodeId, context);
      return replica.replicate(request);
    },
    async *replicateStream(requests, context) {
      // Each message is applied as soon as it arrives, so it joins the next group commit even
      // while an earlier message's commit runs; answers go back in message order.
      yield* inOrder(untilClosing(requests, deps.closing), replicateStreamMessagesInFlightMax, async (message) => {
        rejectIfMalformed(message);
        if (message.batch === undefined) throw new InvalidRequestError('ReplicateStream message without a batch');
        admit(message.batch.fromNodeId, context);
        return { ack: await replica.replicate(message.batch) };
      });
    },
    async readReplica(request, context) {
      admit(request.fromNodeId, context);
      return replica.read(request);
    },
    async *readReplicaStream(requests, context) {
      for await (const message of untilClosing(requests, deps.closing)) {
        rejectIfMalformed(message);
        if (message.read === undefined) throw new InvalidRequestError('ReadReplicaStream message without a read');
        admit(message.read.fromNodeId, context);
        yield { records: replica.read(message.read) };
      }
    },
    async scanLocal(request, context) {
      admit(request.fromNodeId, context);
      return replica.scanLocal(request);
    },
    async ping(request, context) {
      // Without peerTls anyone may ask the clock (as before); with it, only members (dead or
      // removed ones too: the epoch in the answer is how they learn of it).
      if (deps.identityFromCertificate) checkCaller(request.fromNodeId, context, true);
      return replica.ping();
    },
    async confirmTombstones(request, context) {
      admit(request.fromNodeId, context);
      return replica.confirmTombstones(request);
    },
    async purgeTombstones(request, context) {
      admit(request.fromNodeId, context);
      return replica.purgeTombstones(request);
    },
    async rangeDigests(request, context) {
      admit(request.fromNodeId, context);
      return replica.rangeDigests(request);
    },
    async leafDigests(request, context) {
      admit(request.fromNodeId, context);
      return replica.leafDigests(request);
    },
    async bucketRecords(request, context) {
      admit(request.fromNodeId, context);
      return replica.bucketRecords(request);
    },
    async fetchRange(request, context) {
      admit(request.fromNodeId, context);
      return replica.fetchRange(request, context.signal);
    },
    async backup(request, context) {
      checkCaller(request.fromNodeId, context);
      return deps.backup();
    },
    async getMembership(request, context) {
      return agreement(request.fromNodeId, context, true).getMembership();
    },
    async membershipPrepare(request, context) {
      return agreement(request.fromNodeId, context).membershipPrepare(request);
    },
    async membershipAccept(request, context) {
      return agreement(request.fromNodeId, context).membershipAccept(request);
    },
    async membershipCommit(request, context) {
      return agreement(request.fromNodeId, context).membershipCommit(request);
    },
  };
}
