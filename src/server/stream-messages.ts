import { setMaxListeners } from 'node:events';

/** Helpers for the message loops of the node's bidirectional stream handlers. */

/**
 * The messages of `source` until `closing` aborts: a stream waiting for its next message ends at
 * once; one whose message is being handled ends after it.
 */
export async function* untilClosing<T>(source: AsyncIterable<T>, closing: AbortSignal): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  // One listener for the stream's life, ending whichever wait is current. (Racing every
  // iterator.next() against one long-lived "closed" promise left a reaction, and with it the
  // message, on that promise per message: a leak of every message a stream ever carried.)
  let endWait: ((result: IteratorResult<T>) => void) | undefined;
  const onClose = () => endWait?.({ done: true, value: undefined });
  closing.addEventListener('abort', onClose, { once: true });
  try {
    while (!closing.aborted) {
      const next = await new Promise<IteratorResult<T>>((resolve, reject) => {
        endWait = resolve;
        iterator.next().then(resolve, reject);
      });
      endWait = undefined;
      if (next.done === true) return;
      yield next.value;
    }
  } finally {
    closing.removeEventListener('abort', onClose);
    void iterator.return?.(undefined)?.catch(() => undefined);
  }
}

/**
 * `handle` applied to each message of `source` as it arrives, up to `maxInFlight` at once, with
 * the results yielded in message order. The first failure ends the stream with its error.
 */
export async function* inOrder<T, R>(source: AsyncIterable<T>, maxInFlight: number, handle: (message: T) => Promise<R>): AsyncGenerator<R> {
  const iterator = source[Symbol.asyncIterator]();
  const pending: Promise<R>[] = [];
  let next: Promise<IteratorResult<T>> | undefined;
  let ended = false;
  try {
    while (!ended || pending.length > 0) {
      if (!ended && pending.length < maxInFlight) {
        next ??= iterator.next();
        // With nothing pending, wait for a message; else for whichever comes first.
        const arrived = pending.length === 0 ? await next : await Promise.race([next, pending[0]!.then(() => undefined, () => undefined)]);
        if (arrived !== undefined) {
          next = undefined;
          if (arrived.done === true) ended = true;
          else {
            const answer = handle(arrived.value);
            answer.catch(() => undefined); // surfaced in order below, not as an unhandled rejection
            pending.push(answer);
          }
          continue;
        }
      }
      yield await pending.shift()!;
    }
  } finally {
    void iterator.return?.(undefined)?.catch(() => undefined);
  }
}

/**
 * An AbortController whose signal every open stream of one kind listens to (one listener per
 * stream, removed when it ends): a node with many clients or peers has many at once, which is
 * not a leak, so Node's default warning at 11 listeners is turned off for it.
 */
export function streamsClosingSignal(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
