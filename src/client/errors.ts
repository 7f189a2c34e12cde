import { ClientError, Status } from 'nice-grpc';

/** Extra facts about a {@link KvError}. */
export interface KvErrorOptions {
  /**
   * The SDK operation that failed (`put`, `get`, `delete`, `listKeys`, `backup`, `status`,
   * `verify`, `repair`).
   */
  operation?: string;
  /** True when no server answered: no endpoint could be connected to. */
  unreachable?: boolean;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * The one error type of the SDK: a gRPC status code, the details, and the endpoint involved.
 *
 * `code` is a nice-grpc {@link Status} (re-exported by this package). The codes a caller meets:
 * - `INVALID_ARGUMENT`: bad key or value (empty key: checked by the client, no call is made;
 *   size limits: answered by the node, nothing was written).
 * - `UNAVAILABLE`: not enough replicas answered, or no endpoint could be reached (then
 *   `unreachable` is true).
 * - `DEADLINE_EXCEEDED`: the call's deadline passed (retries included).
 * - `CANCELLED`: the caller's `signal` was aborted.
 * - `RESOURCE_EXHAUSTED`: over a node limit (operations per Batch or message); nothing was
 *   applied. (A node whose in-flight budget `limits.maxInFlightBytes` is full refuses calls with
 *   it too; the client sends those again after a pause until the deadline, so a caller sees
 *   `DEADLINE_EXCEEDED` saying the node stayed overloaded, never that refusal.)
 * - `INTERNAL`: as answered by the node.
 *
 * A `put` or `delete` that fails with `UNAVAILABLE` or `DEADLINE_EXCEEDED` after it was sent may
 * still have been applied: the node logged it and keeps replicating it. Retry with the same value
 * if it must be visible.
 *
 * @example
 * ```ts
 * import { KvClient, KvError, Status } from 'kvstore';
 *
 * try {
 *   await client.put('greeting', 'hello');
 * } catch (err) {
 *   if (KvError.isKvError(err) && err.code === Status.UNAVAILABLE) {
 *     console.error(`cluster degraded (${err.endpoint}): ${err.details}`);
 *   } else {
 *     throw err;
 *   }
 * }
 * ```
 */
export class KvError extends Error {
  override readonly name = 'KvError';
  /** gRPC status code. */
  readonly code: Status;
  /** What went wrong, as told by the node or the client. */
  readonly details: string;
  /** The endpoint (host:port) the failing attempt used; empty when no call was made. */
  readonly endpoint: string;
  /** The SDK operation that failed (`put`, `get`, ...). */
  readonly operation: string;
  /**
   * True when the call failed without reaching any node: every endpoint tried was unreachable
   * (connection refused, or not connected within the connect timeout or the deadline).
   */
  readonly unreachable: boolean;

  /**
   * @example
   * ```ts
   * throw new KvError(Status.INVALID_ARGUMENT, 'key must not be empty', '', { operation: 'get' });
   * ```
   */
  constructor(code: Status, details: string, endpoint = '', options: KvErrorOptions = {}) {
    const operation = options.operation ?? '';
    const where = [operation, endpoint === '' ? '' : `via ${endpoint}`].filter((part) => part !== '').join(' ');
    super(`${statusName(code)}: ${where === '' ? '' : `${where}: `}${details}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
    this.endpoint = endpoint;
    this.operation = operation;
    this.unreachable = options.unreachable ?? false;
  }

  /**
   * The status code's name, e.g. `UNAVAILABLE`.
   *
   * @example
   * ```ts
   * catch (err) {
   *   if (KvError.isKvError(err)) metrics.increment(`kv.errors.${err.codeName}`);
   * }
   * ```
   */
  get codeName(): string {
    return statusName(this.code);
  }

  /**
   * True if `error` is a {@link KvError} (also across duplicate copies of this package).
   *
   * @example
   * ```ts
   * catch (err) {
   *   if (KvError.isKvError(err) && err.code === Status.NOT_FOUND) { ... }
   * }
   * ```
   */
  static isKvError(error: unknown): error is KvError {
    if (error instanceof KvError) return true;
    if (typeof error !== 'object' || error === null) return false;
    const candidate = error as { name?: unknown; code?: unknown; details?: unknown; endpoint?: unknown };
    return (
      candidate.name === 'KvError' &&
      typeof candidate.code === 'number' &&
      typeof candidate.details === 'string' &&
      typeof candidate.endpoint === 'string'
    );
  }
}

/**
 * The name of a status code (`UNAVAILABLE`), or `STATUS_<n>` for a code nice-grpc does not know.
 *
 * @example
 * ```ts
 * statusName(Status.DEADLINE_EXCEEDED); // 'DEADLINE_EXCEEDED'
 * ```
 */
export function statusName(code: Status): string {
  return Status[code] ?? `STATUS_${String(code)}`;
}

/** Turns whatever a nice-grpc call threw (other than an abort) into a {@link KvError}. */
export function toKvError(error: unknown, operation: string, endpoint: string): KvError {
  if (KvError.isKvError(error)) return error;
  if (error instanceof ClientError) {
    return new KvError(error.code, oneLine(error.details), endpoint, { operation, cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new KvError(Status.UNKNOWN, oneLine(message), endpoint, { operation, cause: error });
}

/** Collapses line breaks so an error message stays on one line. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}
