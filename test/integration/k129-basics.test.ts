// Issue 6 rpcs against a real daemon before any pod exists: stats/metrics answer (empty, never
// UNIMPLEMENTED), unknown IDs are NOT_FOUND, GetContainerEvents streams for many subscribers.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { status } from '@grpc/grpc-js';
import { startDaemon, runCli, type TestDaemon } from '../helpers/daemon.js';
import { runtimeCall } from '../../src/cli/client.js';

let d: TestDaemon;
beforeAll(async () => {
  d = await startDaemon();
});
afterAll(() => d.cleanup());

const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

describe('stats and metrics rpcs (no pods)', () => {
  it('lists nothing and answers NOT_FOUND for unknown IDs', async () => {
    expect((await runtimeCall(d.client, 'ListContainerStats', {})).stats).toEqual([]);
    expect((await runtimeCall(d.client, 'ListPodSandboxStats', {})).stats).toEqual([]);
    expect((await runtimeCall(d.client, 'ListPodSandboxMetrics', {})).pod_metrics).toEqual([]);
    expect(await codeOf(runtimeCall(d.client, 'ContainerStats', { container_id: 'nope' }))).toBe(status.NOT_FOUND);
    expect(await codeOf(runtimeCall(d.client, 'PodSandboxStats', { pod_sandbox_id: 'nope' }))).toBe(status.NOT_FOUND);
    expect(await codeOf(runtimeCall(d.client, 'ContainerStats', { container_id: '' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('describes cAdvisor-named metrics', async () => {
    const r = await runtimeCall(d.client, 'ListMetricDescriptors', {});
    const names = r.descriptors.map((x) => x.name);
    expect(names).toEqual(expect.arrayContaining(['container_cpu_usage_seconds_total', 'container_memory_working_set_bytes', 'container_network_receive_bytes_total']));
    expect(r.descriptors.find((x) => x.name === 'container_network_receive_bytes_total')!.label_keys).toContain('interface');
  });

  it('prints stats tables from the CLI', async () => {
    const env = { CONTAINER_RUNTIME_ENDPOINT: d.socket };
    const s = await runCli(['stats', '-s', '0'], env);
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(/^CONTAINER\s+NAME\s+CPU %\s+MEM/);
    const p = await runCli(['statsp', '-o', 'json'], env);
    expect(JSON.parse(p.stdout)).toEqual({ stats: [] });
  });
});

describe('GetContainerEvents', () => {
  it('keeps a stream open for each of several subscribers until they cancel', async () => {
    const calls = [0, 1, 2].map(() => d.client.runtime.GetContainerEvents({}));
    const ended = calls.map((c) => new Promise<string>((r) => {
      c.on("error", (e: { code: number }) => r(e.code === Number(status.CANCELLED) ? 'cancelled' : `error ${e.code}`));
      c.on('end', () => r('ended'));
      c.on('data', () => undefined);
    }));
    await new Promise((r) => setTimeout(r, 300));
    for (const c of calls) c.cancel();
    expect(await Promise.all(ended)).toEqual(['cancelled', 'cancelled', 'cancelled']);
  });

  it('ends open event streams on shutdown instead of waiting out the grace period', async () => {
    const own = await startDaemon();
    const call = own.client.runtime.GetContainerEvents({});
    const ended = new Promise<void>((r) => {
      call.on('end', () => r());
      call.on('error', () => r());
      call.on('data', () => undefined);
    });
    await new Promise((r) => setTimeout(r, 200));
    const t = Date.now();
    expect(await own.stop()).toBe(0);
    await ended;
    expect(Date.now() - t).toBeLessThan(3000);
    await own.cleanup();
  });
});
