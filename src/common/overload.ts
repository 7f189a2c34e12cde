/**
 * How a node says "overloaded, nothing was run": a RESOURCE_EXHAUSTED status whose details start
 * with this text (kvstore.proto documents it). The node's in-flight budget refuses unary and Batch
 * calls this way before running anything (src/server/in-flight-budget.ts), so a client may send
 * such a call again after a pause, even a put or delete; the SDK does (src/client/kv-client.ts).
 * Shared by both sides so the text cannot drift.
 */
export const overloadedDetailsPrefix = 'node overloaded:';

/** gRPC status code RESOURCE_EXHAUSTED. */
const resourceExhaustedCode = 8;

/** Whether a status (code and details) is a node's "overloaded, nothing was run" refusal. */
export function isOverloadRefusal(code: number, details: string): boolean {
  return code === resourceExhaustedCode && details.startsWith(overloadedDetailsPrefix);
}
