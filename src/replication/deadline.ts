import { RequestTimeoutError } from './errors.js';

/**
 * How long a request may wait for replicas: the client's cancellation or deadline (`signal`,
 * aborted by gRPC when the call's deadline passes) and the server's own cap (`timeoutMs`,
 * counted from when the request starts waiting). Kept as data, not a combined AbortSignal: the
 * profile showed AbortSignal.any + AbortSignal.timeout per request at ~4% of server CPU, and
 * most requests never wait long enough to need a timer.
 */
export interface RequestDeadline {
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
}

/**
 * Resolves with `promise`, or rejects with RequestTimeoutError(message()) once the deadline's
 * signal aborts or its timeout passes, whichever comes first.
 */
export function untilAborted<T>(promise: Promise<T>, deadline: RequestDeadline, message: () => string): Promise<T> {
  const { signal, timeoutMs } = deadline;
  if (signal.aborted) return Promise.reject(new RequestTimeoutError(message()));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new RequestTimeoutError(message()));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      reject(new RequestTimeoutError(message()));
    }, timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
