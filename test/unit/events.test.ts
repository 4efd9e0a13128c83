// The event fan-out: many subscribers, ordered delivery with statuses snapshotted at publish time, and
// the slow-subscriber policy (overflow ends that subscriber only, never blocks the publisher).
import { describe, it, expect } from 'vitest';
import { Broadcaster } from '../../src/events/subscription.js';
import { EventBus, nowNanos, type LifecycleEvent } from '../../src/events/bus.js';
import { ContainerEventFeed, type PodStatusSnapshot } from '../../src/events/container-events.js';

const ev = (type: LifecycleEvent['type'], containerId: string, podId = 'pod1'): LifecycleEvent => ({ type, containerId, podId, createdAt: '1700000000000000000' });

describe('Broadcaster', () => {
  it('delivers every item to every subscriber, in order', async () => {
    const b = new Broadcaster<number>();
    const s1 = b.subscribe(10);
    const s2 = b.subscribe(10);
    for (let i = 0; i < 5; i++) b.publish(i);
    s1.close();
    const got1: number[] = [];
    for await (const x of s1) got1.push(x);
    expect(got1).toEqual([0, 1, 2, 3, 4]);
    expect(b.subscribers).toBe(1);
    const w = s2.next();
    expect((await w).value).toBe(0);
  });

  it('wakes a waiting reader as soon as an item is published', async () => {
    const b = new Broadcaster<string>();
    const s = b.subscribe(2);
    const pending = s.next();
    b.publish('a');
    expect(await pending).toEqual({ value: 'a', done: false });
  });

  it('ends only the subscriber that overflows; the publisher never waits and others keep everything', async () => {
    const b = new Broadcaster<number>();
    const slow = b.subscribe(3);
    const fast = b.subscribe(100);
    const start = process.hrtime.bigint();
    for (let i = 0; i < 50; i++) b.publish(i);
    expect(Number(process.hrtime.bigint() - start) / 1e6).toBeLessThan(50);
    expect(slow.endReason).toBe('overflow');
    expect(await slow.next()).toEqual({ value: undefined, done: true });
    expect(b.subscribers).toBe(1);
    expect(fast.buffered).toBe(50);
  });
  it('tells a waiting stream that its subscription ended, with one shared promise however often it waits', async () => {
    const b = new Broadcaster<number>();
    const s = b.subscribe(1);
    const w1 = s.whenEnded();
    expect(s.whenEnded()).toBe(w1);
    b.publish(1);
    b.publish(2);
    expect(await w1).toBe('overflow');
    expect(await s.whenEnded()).toBe('overflow');
  });
});

describe('ContainerEventFeed', () => {
  function snapshot(podId: string, state: string): PodStatusSnapshot {
    return { status: { id: podId, state: 'SANDBOX_READY' }, containers: [{ id: 'c1', state: state as 'CONTAINER_RUNNING' }] };
  }

  it('completes each event with the statuses of its moment, in publish order, for every subscriber', async () => {
    const bus = new EventBus();
    const feed = new ContainerEventFeed(bus);
    let current = 'CONTAINER_CREATED';
    let slowFirst = true;
    feed.setProvider({
      podStatusSnapshot: (podId) => {
        // snapshot now, answer later; the first answer is the slowest, yet order must hold
        const s = snapshot(podId, current);
        const delay = slowFirst ? 30 : 0;
        slowFirst = false;
        return new Promise((r) => setTimeout(() => r(s), delay));
      },
    });
    const a = feed.subscribe();
    const b = feed.subscribe();
    bus.publish(ev('CONTAINER_CREATED_EVENT', 'c1'));
    current = 'CONTAINER_RUNNING';
    bus.publish(ev('CONTAINER_STARTED_EVENT', 'c1'));
    await feed.flushed();
    for (const sub of [a, b]) {
      const first = (await sub.next()).value!;
      const second = (await sub.next()).value!;
      expect([first.container_event_type, first.containers_statuses![0].state]).toEqual(['CONTAINER_CREATED_EVENT', 'CONTAINER_CREATED']);
      expect([second.container_event_type, second.containers_statuses![0].state]).toEqual(['CONTAINER_STARTED_EVENT', 'CONTAINER_RUNNING']);
      expect(first.pod_sandbox_status).toMatchObject({ id: 'pod1' });
      expect(first.created_at).toBe('1700000000000000000');
    }
    feed.close();
  });

  it('still delivers an event (without statuses) when the pod is gone or the lookup fails', async () => {
    const bus = new EventBus();
    const errors: unknown[] = [];
    const feed = new ContainerEventFeed(bus, (e) => errors.push(e));
    feed.setProvider({
      podStatusSnapshot: (podId) => {
        if (podId === 'bad') throw new Error('boom');
        return undefined;
      },
    });
    const s = feed.subscribe();
    bus.publish(ev('CONTAINER_DELETED_EVENT', 'c1', 'gone'));
    bus.publish(ev('CONTAINER_DELETED_EVENT', 'c2', 'bad'));
    await feed.flushed();
    expect((await s.next()).value).toMatchObject({ container_id: 'c1', pod_sandbox_status: null, containers_statuses: [] });
    expect((await s.next()).value).toMatchObject({ container_id: 'c2' });
    expect(errors).toHaveLength(1);
  });
});

describe('nowNanos', () => {
  // kubelet's evented PLEG drops an event older than the one it cached: timestamps must never go back.
  it('is strictly increasing over 100k calls', () => {
    let last = BigInt(nowNanos());
    let backwards = 0;
    for (let i = 0; i < 100_000; i++) {
      const t = BigInt(nowNanos());
      if (t <= last) backwards++;
      last = t;
    }
    expect(backwards).toBe(0);
  });

  it('stays close to the wall clock', () => {
    const ms = BigInt(Date.now());
    const t = BigInt(nowNanos()) / 1_000_000n;
    expect(t >= ms - 1n && t <= ms + 1000n).toBe(true);
  });
});
