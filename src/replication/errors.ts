import type { MembershipState } from '../cluster/membership.js';

/**
 * Domain errors. Plain classes, no gRPC: the server maps each to a status code in one table
 * (src/server/error-status.ts). Messages are written for the person who sees them.
 */

/** The request is malformed or breaks a configured limit. */
export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';
}

/** Not enough replicas answered for the requested consistency. */
export class NotEnoughReplicasError extends Error {
  override name = 'NotEnoughReplicasError';
}

/** The request's deadline passed before enough replicas answered. */
export class RequestTimeoutError extends Error {
  override name = 'RequestTimeoutError';
}

/** The node is shutting down and takes no new work. */
export class ShuttingDownError extends Error {
  override name = 'ShuttingDownError';
}

/** Too large or too many: a request that would exceed a resource bound. */
export class ResourceLimitError extends Error {
  override name = 'ResourceLimitError';
}

/** The caller sent no credentials, or credentials that name no user (a wrong or removed token). */
export class UnauthenticatedError extends Error {
  override name = 'UnauthenticatedError';
}

/** The caller is a known user whose roles do not grant what the request needs. */
export class PermissionDeniedError extends Error {
  override name = 'PermissionDeniedError';
}

/** This node was declared dead or removed from the membership: it serves nothing (UNAVAILABLE, so clients fail over). */
export class NotServingMemberError extends Error {
  override name = 'NotServingMemberError';
}

/**
 * A membership step was refused for good: the change itself (a change already in progress, an
 * unknown member, an illegal step) or a member's own check. Retrying the same step is pointless.
 */
export class MembershipRefusedError extends Error {
  override name = 'MembershipRefusedError';
}

/**
 * Another step won the epoch this proposer wanted (it was accepted first, so Paxos finishes it):
 * the proposer's own change did not happen. `committed` is the state that did.
 */
export class ConcurrentMembershipChangeError extends MembershipRefusedError {
  override name = 'ConcurrentMembershipChangeError';

  constructor(
    message: string,
    readonly committed: MembershipState,
  ) {
    super(message);
  }
}

/**
 * A FetchRange this node must not answer now (docs/membership.md §5.1): the caller's epoch is
 * not this node's or adjacent, or this node is not a source of the interval. The receiver retries
 * (it may be behind or ahead by a step) or streams from another source.
 */
export class FetchRefusedError extends Error {
  override name = 'FetchRefusedError';
}

/** Members whose agreement a membership step needs did not answer before its deadline. */
export class MembersUnreachableError extends Error {
  override name = 'MembersUnreachableError';

  constructor(
    message: string,
    /** The ids of the members that did not answer. */
    readonly members: readonly string[],
  ) {
    super(message);
  }
}
