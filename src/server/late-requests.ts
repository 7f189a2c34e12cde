import type { Metadata } from 'nice-grpc';
import type { BatchResult } from '../../gen/kvstore/v1/kvstore.js';
import { deadlineMetadataKey } from '../common/deadline-header.js';
import { InvalidRequestError, RequestTimeoutError } from '../replication/errors.js';

/**
 * Late requests (kvstore.proto, "Late requests"): a request read by the node long after its
 * client's absolute deadline is refused with DEADLINE_EXCEEDED and not run. Its client has given
 * up on it (it reported the call as failed, and may have written the key again since); applied
 * now, e.g. by a node that reads it when a partition heals, it would be stamped with a new version
 * and overwrite writes acknowledged after it.
 *
 * "Long after" means by more than a tolerance that covers clock skew between client and node:
 * the deadline is on the client's clock, the check on the node's, and below the tolerance the node
 * cannot tell a skewed clock from a delayed request, so it runs the request. The node uses its
 * `clock.maxDriftMs` (the skew it tolerates between its own members' clocks). Requests that carry
 * no absolute deadline are never refused here: gRPC's relative `grpc-timeout` still bounds them.
 */

/** Default tolerance: the default of `clock.maxDriftMs`. The node passes its configured value. */
export const lateRequestToleranceMsDefault = 60_000;

/** Late requests refused since start, for /metrics. */
export class LateRequestStats {
  /** Put/Get/Delete/Batch calls and OperationStream operations refused as late (a Batch counts once). */
  lateRequestsRefused = 0;
}

/** Longest accepted metadata value: 16 digits is past the year 2286 in Unix milliseconds. */
const deadlineDigitsMax = 16;
const decimalDeadline = new RegExp(`^[0-9]{1,${deadlineDigitsMax}}$`);
/** google.rpc.Code DEADLINE_EXCEEDED. */
const deadlineExceededCode = 4;

/** The late-request check of one node's public service. */
export class LateRequests {
  /**
   * @param toleranceMs how far past its deadline a request may be read and still run (clock skew)
   * @param stats counted into
   * @param now the node's wall clock (Unix ms)
   */
  constructor(
    readonly toleranceMs: number,
    readonly stats: LateRequestStats,
    readonly now: () => number = Date.now,
  ) {
    if (!(Number.isFinite(toleranceMs) && toleranceMs >= 0)) throw new Error(`late-request tolerance must be a number of ms >= 0, got ${toleranceMs}`);
  }

  /**
   * Throws DEADLINE_EXCEEDED (RequestTimeoutError) if the call's metadata carries a deadline
   * passed by more than the tolerance, INVALID_ARGUMENT if it carries one that is not a number.
   */
  checkCall(metadata: Metadata): void {
    this.checkDeadlineHeader(metadata.get(deadlineMetadataKey));
  }

  /** checkCall of the value of a call's deadline header (`kvstore-deadline-unix-ms`), undefined when absent. */
  checkDeadlineHeader(raw: unknown): void {
    if (raw === undefined) return;
    if (typeof raw !== 'string' || !decimalDeadline.test(raw)) {
      throw new InvalidRequestError(`metadata ${deadlineMetadataKey} must be the call's deadline in Unix epoch milliseconds, as 1 to ${deadlineDigitsMax} decimal digits; got ${JSON.stringify(String(raw)).slice(0, 80)}`);
    }
    const refusal = this.refusal(Number(raw), this.now());
    if (refusal !== undefined) throw new RequestTimeoutError(refusal);
  }

  /** The error result of a stream operation whose `deadline_unix_ms` passed too long before `nowMs`, else undefined. */
  checkOperation(deadlineUnixMs: bigint, nowMs: number): BatchResult | undefined {
    if (deadlineUnixMs === 0n) return undefined;
    const refusal = this.refusal(Number(deadlineUnixMs), nowMs);
    return refusal === undefined ? undefined : { error: { code: deadlineExceededCode, message: refusal } };
  }

  /** Why a request with this deadline (0: none) read at `nowMs` is refused (counted), or undefined if it runs. */
  private refusal(deadlineUnixMs: number, nowMs: number): string | undefined {
    if (deadlineUnixMs === 0) return undefined;
    const lateMs = nowMs - deadlineUnixMs;
    if (!(lateMs > this.toleranceMs)) return undefined;
    this.stats.lateRequestsRefused++;
    return (
      `request arrived ${lateMs} ms after its client's deadline (${new Date(deadlineUnixMs).toISOString()}); not applied: the client has given up on it ` +
      `(or the client's clock is more than ${this.toleranceMs} ms behind this node's)`
    );
  }
}
