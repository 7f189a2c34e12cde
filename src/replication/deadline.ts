import { RequestTimeoutError } from './errors.js';

/**
 * Resolves with `promise`, or rejects with RequestTimeoutError(message()) once `signal` aborts
 * (the client's deadline or cancellation, or the server's own request cap).
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, message: () => string): Promise<T> {
  if (signal.aborted) return Promise.reject(new RequestTimeoutError(message()));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new RequestTimeoutError(message()));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
