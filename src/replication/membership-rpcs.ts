import type {
  GetMembershipResponse,
  MembershipAcceptRequest,
  MembershipAcceptResponse,
  MembershipCommitRequest,
  MembershipCommitResponse,
  MembershipPrepareRequest,
  MembershipPrepareResponse,
} from '../../gen/kvstore/internal/v1/peer.js';
import type { Ballot } from '../cluster/membership-agreement.js';
import { InvalidRequestError } from './errors.js';
import type { MembershipAcceptor } from './membership-acceptor.js';
import { acceptAnswerToMessage, ballotFromMessage, commitAnswerToMessage, epochFromMessage, membershipFromMessage, membershipToMessage, prepareAnswerToMessage } from './membership-messages.js';

/**
 * The four agreement RPCs as the peer service serves them (src/server/peer-service.ts checks the
 * caller first): each request is checked and converted, handed to the acceptor, and its answer
 * converted back.
 */
export function createMembershipRpcs(acceptor: MembershipAcceptor) {
  /**
   * A ballot is its proposer's: one sent under another member's id could equal that member's own
   * ballot with another state, and two states under one ballot break Paxos.
   */
  const checkBallot = (ballot: Ballot, from: string, what: string) => {
    if (ballot.proposer !== from) throw new InvalidRequestError(`${what} carries a ballot of "${ballot.proposer}": a member proposes under its own id only`);
  };
  return {
    getMembership(): GetMembershipResponse {
      return { state: membershipToMessage(acceptor.current()) };
    },
    async membershipPrepare(request: MembershipPrepareRequest): Promise<MembershipPrepareResponse> {
      const what = `MembershipPrepare from ${request.fromNodeId}`;
      const epoch = epochFromMessage(request.epoch, what);
      const ballot = ballotFromMessage(request.ballot, what);
      checkBallot(ballot, request.fromNodeId, what);
      const base = membershipFromMessage(request.baseState, `the base state of ${what}`);
      if (base.epoch !== epoch - 1) throw new InvalidRequestError(`${what} is for epoch ${epoch} but its base state is epoch ${base.epoch} (the proposal must follow it)`);
      // An unjoined node (started with cluster.join) knows no state to fetch from: it takes the
      // proposer's committed one, the cluster it is being added to (docs/membership.md §1.2).
      if (acceptor.current().epoch === 0) await acceptor.catchUp(base);
      return prepareAnswerToMessage(await acceptor.prepare(request.fromNodeId, epoch, ballot));
    },
    async membershipAccept(request: MembershipAcceptRequest): Promise<MembershipAcceptResponse> {
      const what = `MembershipAccept from ${request.fromNodeId}`;
      const ballot = ballotFromMessage(request.ballot, what);
      checkBallot(ballot, request.fromNodeId, what);
      const state = membershipFromMessage(request.state, `the state of ${what}`);
      return acceptAnswerToMessage(await acceptor.accept(request.fromNodeId, ballot, state));
    },
    async membershipCommit(request: MembershipCommitRequest): Promise<MembershipCommitResponse> {
      const state = membershipFromMessage(request.state, `the state of MembershipCommit from ${request.fromNodeId}`);
      return commitAnswerToMessage(await acceptor.commit(request.fromNodeId, state));
    },
  };
}
