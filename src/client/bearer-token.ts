import { Metadata, type CallOptions, type ClientMiddlewareCall } from 'nice-grpc';

/** A token as it may travel in an HTTP/2 header value after "Bearer ": printable ASCII, no spaces. */
const tokenPattern = /^[\x21-\x7e]{1,4096}$/;

/** Whether `token` can be sent as `authorization: Bearer <token>`. */
export function isValidToken(token: unknown): token is string {
  return typeof token === 'string' && tokenPattern.test(token);
}

/**
 * A nice-grpc client middleware that sends `authorization: Bearer <token>` with every call
 * (KvClientOptions.token). Streams carry it once, when they open.
 */
export function bearerTokenMiddleware(token: string) {
  const value = `Bearer ${token}`;
  return async function* <Request, Response>(call: ClientMiddlewareCall<Request, Response>, options: CallOptions) {
    const metadata = Metadata(options.metadata);
    metadata.set('authorization', value);
    return yield* call.next(call.request, { ...options, metadata });
  };
}
