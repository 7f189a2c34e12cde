import type { CallContext, ServerMiddlewareCall } from 'nice-grpc';
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
      if (!isDomainError(err) && !(err instanceof Error && err.name === 'ServerError')) {
        logger.error({ err, method: call.method.path }, 'request failed with an unexpected error');
      }
      throw toServerError(err);
    }
  };
}
