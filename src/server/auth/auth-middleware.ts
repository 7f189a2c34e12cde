import type { CallContext, ServerMiddlewareCall } from 'nice-grpc';
import type { AuthSession, Authenticator } from './authenticator.js';

/** What the authentication middleware adds to a call's context: the caller. */
export interface AuthCallContext {
  readonly auth: AuthSession;
}

/**
 * The subject CN of the client certificate the TLS layer verified for this call, if any (the
 * hook for certificate authentication, filled in where the public server's TLS is set up).
 */
export type CertificateCnOf = (context: CallContext) => string | undefined;

/**
 * Authenticates every call of the service it is attached to (the public KVStore service; the
 * health service is added without it and stays open): no credentials, or credentials naming no
 * user, answer UNAUTHENTICATED before the handler runs. The handler finds the caller in
 * `context.auth` ({@link sessionOf}) and checks each permission where it knows the key.
 */
export function authMiddleware(authenticator: Authenticator, certificateCnOf?: CertificateCnOf) {
  return async function* <Request, Response>(call: ServerMiddlewareCall<Request, Response, AuthCallContext>, context: CallContext) {
    const header = context.metadata.get('authorization');
    const auth = authenticator.authenticate(typeof header === 'string' ? header : undefined, certificateCnOf?.(context));
    return yield* call.next(call.request, { ...context, auth });
  };
}

/** The caller of a call, or undefined when the node runs without `auth` (everything allowed). */
export function sessionOf(context: CallContext): AuthSession | undefined {
  return (context as Partial<AuthCallContext>).auth;
}
