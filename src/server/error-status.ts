import { ServerError, Status } from 'nice-grpc';
import { notServingDetailsPrefix } from '../common/not-serving.js';
import { FetchRefusedError, InvalidRequestError, MembershipRefusedError, MembersUnreachableError, NotEnoughReplicasError, NotServingMemberError, PermissionDeniedError, RequestTimeoutError, ResourceLimitError, ShuttingDownError, UnauthenticatedError } from '../replication/errors.js';
import { DataDirMismatchError, DiskFullError, UnstorableRecordError } from '../storage/repository.js';
import { RecordDecodeError } from '../storage/record-codec.js';

/** The one table from domain errors to gRPC status codes. Anything else is a bug: INTERNAL. */
const statusByError: ReadonlyArray<readonly [new (...args: never[]) => Error, Status]> = [
  [InvalidRequestError, Status.INVALID_ARGUMENT],
  [NotEnoughReplicasError, Status.UNAVAILABLE],
  [ShuttingDownError, Status.UNAVAILABLE],
  [NotServingMemberError, Status.UNAVAILABLE],
  [RequestTimeoutError, Status.DEADLINE_EXCEEDED],
  [ResourceLimitError, Status.RESOURCE_EXHAUSTED],
  [RecordDecodeError, Status.DATA_LOSS],
  [DataDirMismatchError, Status.FAILED_PRECONDITION],
  [UnstorableRecordError, Status.INVALID_ARGUMENT],
  [DiskFullError, Status.RESOURCE_EXHAUSTED],
  [UnauthenticatedError, Status.UNAUTHENTICATED],
  [PermissionDeniedError, Status.PERMISSION_DENIED],
  // A concurrent change that won (ConcurrentMembershipChangeError) is a refusal too.
  [MembershipRefusedError, Status.FAILED_PRECONDITION],
  [MembersUnreachableError, Status.UNAVAILABLE],
  [FetchRefusedError, Status.FAILED_PRECONDITION],
];

/** Converts an error thrown by a handler into the ServerError nice-grpc sends. */
export function toServerError(err: unknown): ServerError {
  if (err instanceof ServerError) return err;
  // Marked, so a client knows nothing was run and may send even a write to another node.
  if (err instanceof NotServingMemberError) return new ServerError(Status.UNAVAILABLE, `${notServingDetailsPrefix} ${err.message}`);
  for (const [type, status] of statusByError) {
    if (err instanceof type) return new ServerError(status, err.message);
  }
  return new ServerError(Status.INTERNAL, `internal error: ${err instanceof Error ? err.message : String(err)}`);
}

/** Whether an error is an expected domain outcome (logged quietly) rather than a bug. */
export function isDomainError(err: unknown): boolean {
  return statusByError.some(([type]) => err instanceof type);
}
