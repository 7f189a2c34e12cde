import type { CallContext, ServerMiddlewareCall } from 'nice-grpc';
import { InvalidRequestError } from '../replication/errors.js';

/**
 * Requests that are not valid protobuf for their method answer INVALID_ARGUMENT, not grpc-js's
 * INTERNAL "Error deserializing request" (INTERNAL is for our bugs), and only after the call's
 * credentials were checked: the decoder hands on a marker instead of throwing, and the
 * middleware below (attached after authentication) turns it into the error.
 */

const malformed = Symbol('malformed request');

interface MalformedRequest {
  readonly [malformed]: string;
}

interface DecodableType {
  decode(input: Uint8Array, length?: number): unknown;
}

function isMalformed(request: unknown): request is MalformedRequest {
  return typeof request === 'object' && request !== null && malformed in request;
}

/** Throws InvalidRequestError if `request` is a marked malformed message (stream handlers call it per message). */
export function rejectIfMalformed(request: unknown): void {
  check(request);
}

function check(request: unknown): void {
  if (isMalformed(request)) throw new InvalidRequestError(request[malformed]);
}

/** `definition` with every method's request decoder answering a marker where it would throw. */
export function withMalformedRequestsMarked<D extends { readonly fullName: string; readonly methods: Readonly<Record<string, { readonly name: string; readonly requestType: DecodableType }>> }>(definition: D): D {
  const methods: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(definition.methods)) {
    const type = method.requestType;
    const decode = (input: Uint8Array, length?: number): unknown => {
      try {
        return type.decode(input, length);
      } catch (err) {
        return { [malformed]: `request is not a valid ${definition.fullName}.${method.name} message (${input.length} bytes): ${(err as Error).message}` } satisfies MalformedRequest;
      }
    };
    methods[key] = { ...method, requestType: { ...type, decode } };
  }
  return { ...definition, methods } as D;
}

/**
 * Rejects a marked unary request with INVALID_ARGUMENT. Stream messages are not wrapped: a
 * generator per message cost ~10% of the SDK's get throughput (BENCHMARKS.md): the stream
 * handlers call rejectIfMalformed on each message instead.
 */
export function malformedRequestMiddleware() {
  return async function* <Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext) {
    if (!call.requestStream) check(call.request);
    return yield* call.next(call.request, context);
  };
}
