// The slow-subscriber policy through real gRPC (in-process server on a scratch unix socket): a client
// that stops reading is cut off with RESOURCE_EXHAUSTED, while another subscriber gets every event and
// publishing never waits.
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

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('GetContainerEvents backpressure', () => {
  it('cuts off a client that stops reading, keeps a reading one whole, never blocks the publisher', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sk129-ev-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const bus = new EventBus();
    const feed = new ContainerEventFeed(bus);
    const ctx = { containerEvents: feed, log: createLogger('silent') } as unknown as DaemonContext;
    const server = createServer({ runtime: eventsService(ctx).runtime ?? {}, image: {} }, createLogger('silent'));
    const socket = join(dir, 'e.sock');
    await new Promise<void>((res, rej) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
    cleanups.push(() => void server.forceShutdown());
    // separate connections: HTTP/2 flow control of one paused stream must not be what slows the other
    const slowClient = connect(socket);
    const fastClient = connect(socket);
    cleanups.push(() => slowClient.close(), () => fastClient.close());

    const slow = slowClient.runtime.GetContainerEvents({});
    const fast = fastClient.runtime.GetContainerEvents({});
    let fastCount = 0;
    let fastError: grpc.ServiceError | undefined;
    fast.on('data', () => fastCount++);
    fast.on('error', (e: grpc.ServiceError) => (fastError = e));
    let slowCount = 0;
    const slowEnd = new Promise<grpc.ServiceError>((r) => slow.on('error', r));
    slow.on('data', () => {
      slowCount++;
      slow.pause(); // stop reading after the first event
    });
    while (feed.subscribers < 2) await new Promise((r) => setTimeout(r, 10));

    // ~2000 events/s (far above a node's real rate): a reading client keeps up, a stalled one overflows
    // its buffer once the socket and HTTP/2 window are full (big events fill those sooner)
    const total = 4000;
    const pad = 'x'.repeat(1024);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < total; i++) {
      bus.publish({ type: 'CONTAINER_STARTED_EVENT', containerId: `c${i}-${pad}`, podId: 'p', createdAt: String(i) });
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 10));
    }
    const publishMs = Number(process.hrtime.bigint() - t0) / 1e6;
    console.log('published', publishMs, 'fast', fastCount, 'slow', slowCount, 'subs', feed.subscribers);
    const err = await slowEnd;
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err.details).toContain('fell behind');
    expect(slowCount).toBeLessThan(total);
    const deadline = Date.now() + 20_000;
    while (fastCount < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    console.log("fast", fastCount, "slow", slowCount, "publishMs", publishMs, fastError?.details);
    expect(fastError).toBeUndefined();
    expect(fastCount).toBe(total);
    expect(publishMs).toBeLessThan(10_000);
    fast.cancel();
    feed.close();
  });
});
