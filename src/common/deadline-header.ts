/**
 * How a client tells a node the absolute deadline of its call (kvstore.proto, "Late requests"):
 * request metadata `kvstore-deadline-unix-ms`, a decimal string of Unix epoch milliseconds on the
 * client's clock (OperationStream operations carry it as `deadline_unix_ms` instead). gRPC's own
 * `grpc-timeout` is relative, counted from when the node reads the request, so a request held up
 * by a partition arrives with a fresh timeout; this lets the node see that its client gave up.
 * The node refuses such a request (src/server/late-requests.ts); the SDK sends it on every call
 * with a deadline (src/client/kv-client.ts, coalescer.ts, stream-transport.ts). Shared by both
 * sides so the name cannot drift: it is a contract of the public API.
 */
export const deadlineMetadataKey = 'kvstore-deadline-unix-ms';

/** The metadata value of a deadline (a `Date.now()` instant), or undefined if it has none. */
export function deadlineMetadataValue(deadlineAt: number): string | undefined {
  return Number.isFinite(deadlineAt) && deadlineAt > 0 ? String(Math.ceil(deadlineAt)) : undefined;
}
