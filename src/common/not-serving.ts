/**
 * How a node says "this node serves nothing, nothing was run; ask another": an UNAVAILABLE status
 * whose details start with this text (kvstore.proto documents it). A node not yet added, leaving
 * (once reads have moved), removed or declared dead refuses client requests this way before it
 * runs anything (src/replication/live-membership.ts), so a client may send the request to another
 * node, even a put or delete; the SDK does (src/client/kv-client.ts). Shared by both sides so the
 * text cannot drift.
 */
export const notServingDetailsPrefix = 'node not serving:';

/** gRPC status code UNAVAILABLE. */
const unavailableCode = 14;

/** Whether a status (code and details) is a node's "not serving, nothing was run" refusal. */
export function isNotServingRefusal(code: number, details: string): boolean {
  return code === unavailableCode && details.startsWith(notServingDetailsPrefix);
}
