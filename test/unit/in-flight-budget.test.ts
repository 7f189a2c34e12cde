import { describe, expect, it } from 'vitest';
import { InFlightBudget } from '../../src/server/in-flight-budget.js';
import { ResourceLimitError } from '../../src/replication/errors.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Starts acquire(bytes) and records, in `order`, when it is let in. */
function queueAcquire(budget: InFlightBudget, bytes: number, name: string, order: string[], signal = new AbortController().signal): Promise<void> {
  return budget.acquire(bytes, signal).then(() => {
    order.push(name);
  });
}

describe('InFlightBudget', () => {
  it('refuses a call that does not fit with RESOURCE_EXHAUSTED-mapped ResourceLimitError naming the limit, and takes nothing', () => {
    const budget = new InFlightBudget(1000);
    budget.tryAcquire(600);
    expect(() => budget.tryAcquire(500)).toThrow(ResourceLimitError);
    expect(() => budget.tryAcquire(500)).toThrow(/limits\.maxInFlightBytes = 1000.*retry with backoff/);
    expect(budget.inFlightBytes).toBe(600);
    expect(budget.refused).toBe(2);
    budget.tryAcquire(400);
    expect(budget.inFlightBytes).toBe(1000);
    budget.release(1000);
    expect(budget.inFlightBytes).toBe(0);
  });

  it('lets in a request larger than the whole budget when nothing else is in flight', async () => {
    const budget = new InFlightBudget(100);
    budget.tryAcquire(5000);
    expect(() => budget.tryAcquire(1)).toThrow(ResourceLimitError);
    budget.release(5000);
    await budget.acquire(5000, new AbortController().signal);
    expect(budget.inFlightBytes).toBe(5000);
  });

  it('lets waiters in first come first served as bytes are released, and a unary call does not overtake them', async () => {
    const budget = new InFlightBudget(1000);
    const order: string[] = [];
    budget.tryAcquire(900);
    const a = queueAcquire(budget, 500, 'a', order);
    const b = queueAcquire(budget, 100, 'b', order); // would fit now, but waits behind a
    await tick();
    expect(order).toEqual([]);
    expect(() => budget.tryAcquire(50)).toThrow(ResourceLimitError);
    budget.release(900);
    await Promise.all([a, b]);
    expect(order).toEqual(['a', 'b']);
    expect(budget.inFlightBytes).toBe(600);
    expect(budget.waited).toBe(2);
  });

  it('drops a waiter whose signal aborts, rejecting it, and lets the ones behind it in', async () => {
    const budget = new InFlightBudget(1000);
    const order: string[] = [];
    budget.tryAcquire(800);
    const stop = new AbortController();
    const big = queueAcquire(budget, 900, 'big', order, stop.signal);
    const small = queueAcquire(budget, 150, 'small', order);
    await tick();
    expect(order).toEqual([]);
    stop.abort(new Error('call ended'));
    await expect(big).rejects.toThrow('call ended');
    await small;
    expect(order).toEqual(['small']);
    expect(budget.inFlightBytes).toBe(950);
  });
});
