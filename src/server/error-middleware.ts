import type { CallContext, ServerError, ServerMiddlewareCall } from 'nice-grpc';
import type { Logger } from 'pino';
import { isDomainError, toServerError } from './error-status.js';

/**
 * Maps every error a handler throws to a gRPC status (one table, error-status.ts), and logs the
 * ones that are bugs. A bad request never takes the process down.
 */
export function errorMiddleware(logger: Logger) {
  return async function* <Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext) {
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      throw statusOfFailedCall(err, call.method.path, logger);
    }
  };
}

/** The status a call that threw `err` ends with; a bug (not a domain error) is logged first. */
export function statusOfFailedCall(err: unknown, method: string, logger: Logger): ServerError {
  if (!isDomainError(err) && !(err instanceof Error && err.name === 'ServerError')) {
    logger.error({ err, method }, 'request failed with an unexpected error');
  }
  return toServerError(err);
}
