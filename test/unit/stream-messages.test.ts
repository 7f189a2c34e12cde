import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { inOrder, untilClosing } from '../../src/server/stream-messages.js';

/** A source whose messages arrive when the test pushes them (like a client stream). */
function pushSource<T>() {
  const queue: T[] = [];
  let waiting: ((r: IteratorResult<T>) => void) | undefined;
  let ended = false;
  const source: AsyncIterable<T> = {
    [Symbol.asyncIterator]: () => ({
      next: () => {
        if (queue.length > 0) return Promise.resolve({ value: queue.shift()!, done: false });
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (waiting = resolve));
      },
    }),
  };
  return {
    source,
    push(value: T) {
      const w = waiting;
      waiting = undefined;
      if (w !== undefined) w({ value, done: false });
      else queue.push(value);
    },
    end() {
      ended = true;
      const w = waiting;
      waiting = undefined;
      w?.({ value: undefined, done: true });
    },
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('inOrder (ReplicateStream answers)', () => {
  it('starts handling each message as it arrives, at most maxInFlight at once, and yields results in message order', async () => {
    const { source, push, end } = pushSource<number>();
    const started: number[] = [];
    const finish = new Map<number, (v: string) => void>();
    const results: string[] = [];
    const consumer = (async () => {
      for await (const r of inOrder(source, 2, (m) => new Promise<string>((resolve) => {
        started.push(m);
        finish.set(m, resolve);
      }))) results.push(r);
    })();
    push(1);
    push(2);
    push(3);
    await tick();
    expect(started).toEqual([1, 2]); // the third waits for room
    finish.get(2)!('two'); // finishes before 1: held back
    await tick();
    expect(results).toEqual([]);
    finish.get(1)!('one');
    await tick();
    expect(results).toEqual(['one', 'two']);
    expect(started).toEqual([1, 2, 3]);
    finish.get(3)!('three');
    end();
    await consumer;
    expect(results).toEqual(['one', 'two', 'three']);
  });

  it('ends with the error of the first failed message, after the results before it', async () => {
    const { source, push } = pushSource<number>();
    const results: number[] = [];
    push(1);
    push(2);
    push(3);
    const run = (async () => {
      for await (const r of inOrder(source, 4, async (m) => {
        if (m === 2) throw new Error('bad message 2');
        return m;
      })) results.push(r);
    })();
    await expect(run).rejects.toThrow('bad message 2');
    expect(results).toEqual([1]);
  });
});

describe('untilClosing (stream handlers end when the node stops)', () => {
  it('hands out every message, ends a waiting stream when closing aborts, and keeps no message after it was handled', async () => {
    // A real collector, to show that handled messages are not retained (the first version raced
    // each read against one long-lived promise, which kept every message of the stream alive).
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const messageCount = 2000;
    const { source, push } = pushSource<{ readonly payload: Buffer }>();
    const closing = new AbortController();
    const stream = untilClosing(source, closing.signal);
    const handled: WeakRef<object>[] = [];
    for (let i = 0; i < messageCount; i++) {
      push({ payload: Buffer.alloc(64, i) });
      const next = await stream.next();
      expect(next.done).toBe(false);
      handled.push(new WeakRef(next.value as object));
    }
    const waiting = stream.next(); // no message yet: waits, the stream still open
    for (let round = 0; round < 5 && handled.some((r) => r.deref() !== undefined); round++) {
      await tick();
      gc();
    }
    const retained = handled.filter((r) => r.deref() !== undefined).length;
    expect(retained, `${retained} of ${messageCount} handled messages still reachable from the open stream`).toBeLessThan(10);
    closing.abort();
    expect((await waiting).done).toBe(true);
  });
});
