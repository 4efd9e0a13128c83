import { describe, it, expect } from 'vitest';
import { Slots } from '../../src/util/slots.js';

describe('Slots', () => {
  it('runs at most `limit` at once and hands a freed slot to the longest waiter', async () => {
    const slots = new Slots(2);
    const order: string[] = [];
    await slots.acquire();
    await slots.acquire();
    const third = slots.acquire().then(() => order.push('third'));
    const fourth = slots.acquire().then(() => order.push('fourth'));
    await Promise.resolve();
    expect(order).toEqual([]);
    slots.release();
    await third;
    expect(order).toEqual(['third']);
    slots.release();
    await fourth;
    expect(order).toEqual(['third', 'fourth']);
    expect(slots.held).toBe(2);
  });

  it('a waiter that is aborted leaves the queue at once and takes no slot', async () => {
    const slots = new Slots(1);
    await slots.acquire();
    const ac = new AbortController();
    const waiting = slots.acquire(ac.signal);
    const after = slots.acquire();
    ac.abort(new Error('gave up'));
    await expect(waiting).rejects.toThrow('gave up');
    slots.release();
    await after; // the slot went to the next waiter, not to the aborted one
    expect(slots.held).toBe(1);
    slots.release();
    expect(slots.held).toBe(0);
    await expect(slots.acquire(AbortSignal.abort(new Error('already')))).rejects.toThrow('already');
  });

  it('run releases its slot when the work fails', async () => {
    const slots = new Slots(1);
    await expect(slots.run(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(slots.held).toBe(0);
  });
});
