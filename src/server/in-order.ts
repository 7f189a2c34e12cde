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
