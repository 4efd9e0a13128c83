// The slow-subscriber policy through real gRPC (in-process server on a scratch unix socket): a client
// that stops reading is cut off (its subscription detached at once, RESOURCE_EXHAUSTED once it reads
// what was already in flight), while a reading subscriber gets every event and publishing never waits.
//
// Deterministic on a loaded machine: events go out in bursts smaller than the per-subscriber buffer and
// the next burst waits until the reading client has everything so far, so the reader can never overflow,
// while the stalled one must once its transport and its buffer are full.
import { describe, it, expect, afterAll } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from '../../src/cri/server.js';
import { eventsService } from '../../src/cri/events-service.js';
import { EventBus } from '../../src/events/bus.js';
import { ContainerEventFeed } from '../../src/events/container-events.js';
import { connect } from '../../src/cli/client.js';
import { createLogger } from '../../src/log.js';
import type { DaemonContext } from '../../src/daemon/context.js';
import type { ContainerEventResponse__Output } from '../../src/gen/runtime/v1/ContainerEventResponse.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('GetContainerEvents backpressure', () => {
  it('cuts off a client that stops reading, keeps a reading one whole, never blocks the publisher', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sk129-ev-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const bus = new EventBus();
    const limit = 64;
    const feed = new ContainerEventFeed(bus, undefined, limit);
    cleanups.push(() => feed.close());
    const ctx = { containerEvents: feed, log: createLogger('silent') } as unknown as DaemonContext;
    const server = createServer({ runtime: eventsService(ctx).runtime ?? {}, image: {} }, createLogger('silent'));
    const socket = join(dir, 'e.sock');
    await new Promise<void>((res, rej) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
    cleanups.push(() => void server.forceShutdown());
    // separate connections: HTTP/2 flow control of the stalled stream must not be what slows the other
    const slowClient = connect(socket);
    const fastClient = connect(socket);
    cleanups.push(
      () => slowClient.close(),
      () => fastClient.close(),
    );

    const fast = fastClient.runtime.GetContainerEvents({});
    const fastIds: string[] = [];
    let fastError: grpc.ServiceError | undefined;
    fast.on('data', (e: ContainerEventResponse__Output) => fastIds.push(e.container_id.split('-')[0]));
    fast.on('error', (e: grpc.ServiceError) => (fastError = e));
    // The slow client reads one event, then stops reading. (It must read one: grpc-js only starts
    // pausing the HTTP/2 stream at the first message handed to the reader; before that it buffers.)
    const slow = slowClient.runtime.GetContainerEvents({});
    const slowEnd = new Promise<grpc.ServiceError>((r) => slow.on('error', r));
    const slowIds: string[] = [];
    slow.on('data', (e: ContainerEventResponse__Output) => {
      slowIds.push(e.container_id.split('-')[0]);
      if (slowIds.length === 1) slow.pause();
    });
    await until(() => feed.subscribers === 2, 'both subscriptions');

    // big events fill the stalled client's socket and HTTP/2 window sooner
    const pad = 'x'.repeat(4096);
    const burst = limit / 2;
    let published = 0;
    let publishNs = 0n;
    let slowDetachedAt = -1;
    while (published < 3000 && slowDetachedAt < 0) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < burst; i++, published++) {
        bus.publish({ type: 'CONTAINER_STARTED_EVENT', containerId: `c${published}-${pad}`, podId: 'p', createdAt: String(published) });
      }
      publishNs += process.hrtime.bigint() - t0;
      await feed.flushed();
      if (feed.subscribers < 2) slowDetachedAt = published;
      const target = published;
      await until(() => fastIds.length >= target || fastError !== undefined, `the reading client to get ${target} events`);
    }
    // A few more after the cut-off: the reader keeps getting them.
    for (let i = 0; i < burst; i++, published++) {
      bus.publish({ type: 'CONTAINER_STOPPED_EVENT', containerId: `c${published}-${pad}`, podId: 'p', createdAt: String(published) });
    }
    await feed.flushed();
    await until(() => fastIds.length >= published || fastError !== undefined, 'the tail');

    expect(slowDetachedAt, 'the stalled subscriber overflowed').toBeGreaterThan(0);
    expect(feed.subscribers).toBe(1);
    expect(fastError).toBeUndefined();
    expect(fastIds).toEqual(Array.from({ length: published }, (_, i) => `c${i}`));
    // publish() is synchronous fan-out into bounded buffers: ~nothing per event even with a stalled client
    expect(Number(publishNs) / 1e6 / published).toBeLessThan(1);

    // Once the stalled client reads again it gets an unbroken prefix of what was in flight, then the
    // verdict (trailers follow data in HTTP/2, so it cannot see the status earlier).
    expect(slowIds).toEqual(['c0']);
    slow.resume();
    const err = await slowEnd;
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err.details).toContain('fell behind');
    expect(slowIds.length).toBeGreaterThan(0);
    expect(slowIds.length).toBeLessThan(slowDetachedAt);
    expect(slowIds).toEqual(Array.from({ length: slowIds.length }, (_, i) => `c${i}`));
    console.log(`stalled client cut off after ${slowDetachedAt} events (${slowIds.length} were in flight); reader got all ${published}`);
    fast.cancel();
  });
});
