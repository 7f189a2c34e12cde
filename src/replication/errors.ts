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
