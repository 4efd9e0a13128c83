// Issue 5: StopContainer semantics, exits noticed on their own, lifecycle events, quick exits' codes,
// and pod stop/remove taking their containers along. Real runc + conmon, CNI bridge on 10.90.0.0/16.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { runtimeCall } from '../../src/cli/client.js';
import type { ContainerEventResponse__Output } from '../../src/gen/runtime/v1/ContainerEventResponse.js';
import {
  ociDaemon, destroyEnv, setupGuard, teardownGuard, ctrConfig, runPod, createCtr, startCtr, ctrStatus, waitExited, loadImage, type OciEnv,
} from '../helpers/containers.js';

let env: OciEnv;
const TRAP_TERM = ['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 0.2; done'];

beforeAll(async () => {
  setupGuard();
  env = await ociDaemon();
  await loadImage(env, 'docker.io/skoci/sigcont:1', { StopSignal: 'SIGCONT' });
  await loadImage(env, 'docker.io/skoci/sigusr1:1', { StopSignal: 'SIGUSR1' });
});
afterAll(async () => {
  if (env) await destroyEnv(env);
  await teardownGuard();
});

async function running(pod: { id: string; config: object }, name: string, command: string[], image?: string): Promise<string> {
  const id = await createCtr(env, pod, ctrConfig(name, command, image ? { image: { image } } : {}));
  await startCtr(env, id);
  return id;
}

const stop = (id: string, timeout: number) => runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout });

describe('StopContainer', () => {
  it('kills a process that ignores SIGTERM within timeout + 1 s', async () => {
    const pod = await runPod(env);
    const id = await running(pod, 'stubborn', TRAP_TERM);
    await new Promise((r) => setTimeout(r, 300)); // let the trap be installed
    const t0 = Date.now();
    await stop(id, 2);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(3000);
    const s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(137);
  });

  it('with timeout 0 kills at once', async () => {
    const pod = await runPod(env);
    const id = await running(pod, 'now', TRAP_TERM);
    const t0 = Date.now();
    await stop(id, 0);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((await ctrStatus(env, id)).status!.exit_code).toBe(137);
  });

  it('sends the image StopSignal first (a SIGUSR1 handler runs) and a SIGCONT StopSignal still ends in SIGKILL', async () => {
    const pod = await runPod(env);
    const graceful = await running(pod, 'usr1', ['sh', '-c', 'trap "exit 42" USR1; while :; do sleep 0.1; done'], 'docker.io/skoci/sigusr1:1');
    await new Promise((r) => setTimeout(r, 300));
    await stop(graceful, 10);
    expect((await ctrStatus(env, graceful)).status!.exit_code).toBe(42);
    expect((await ctrStatus(env, graceful)).status!.reason).toBe('Error');

    const cont = await running(pod, 'cont', ['sleep', '1000'], 'docker.io/skoci/sigcont:1');
    const t0 = Date.now();
    await stop(cont, 1);
    expect(Date.now() - t0).toBeLessThan(2000);
    const s = (await ctrStatus(env, cont)).status!;
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(137);
  });

  it('is idempotent under ten concurrent calls, each returning only once the exit is recorded', async () => {
    const pod = await runPod(env);
    const id = await running(pod, 'many', TRAP_TERM);
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, async () => {
        await stop(id, 1);
        return (await ctrStatus(env, id)).status!;
      }),
    );
    for (const r of results) {
      expect(r.status).toBe('fulfilled');
      const s = (r as PromiseFulfilledResult<{ state: string; exit_code: number }>).value;
      expect(s.state).toBe('CONTAINER_EXITED');
      expect(s.exit_code).toBe(137);
    }
    // and once more, after the fact
    await stop(id, 1);
  });
});

describe('exits', () => {
  it('a container that exits before StartContainer returns reports its real code: 200 runs of `true` all 0', async () => {
    const pod = await runPod(env);
    const codes = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      const id = await createCtr(env, pod, ctrConfig(`true-${i}`, ['true'], { log_path: '' }));
      await startCtr(env, id);
      const s = await waitExited(env, id);
      codes.set(s.exit_code, (codes.get(s.exit_code) ?? 0) + 1);
      expect(s.reason).toBe('Completed');
      await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    }
    expect(Object.fromEntries(codes)).toEqual({ 0: 200 });
  }, 240_000);

  it('publishes CREATED, STARTED, STOPPED (for an exit nobody asked for) and DELETED events', async () => {
    const stream = env.d.client.runtime.GetContainerEvents({});
    const events: ContainerEventResponse__Output[] = [];
    stream.on('data', (e: ContainerEventResponse__Output) => events.push(e));
    stream.on('error', () => undefined);
    try {
      await new Promise((r) => setTimeout(r, 200));
      const pod = await runPod(env);
      const id = await running(pod, 'short', ['sh', '-c', 'sleep 0.5; exit 5']);
      const s = await waitExited(env, id);
      expect(s.exit_code).toBe(5);
      await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
      const deadline = Date.now() + 5000;
      const mine = () => events.filter((e) => e.container_id === id).map((e) => e.container_event_type);
      while (mine().length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(mine()).toEqual(['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT', 'CONTAINER_STOPPED_EVENT', 'CONTAINER_DELETED_EVENT']);
      const stopped = events.find((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STOPPED_EVENT')!;
      expect(stopped.pod_sandbox_status?.id).toBe(pod.id);
      expect(stopped.containers_statuses.find((c) => c.id === id)?.exit_code).toBe(5);
    } finally {
      stream.cancel();
    }
  });
});

describe('pods and their containers', () => {
  it('StopPodSandbox stops the containers and RemovePodSandbox removes them', async () => {
    const pod = await runPod(env);
    const a = await running(pod, 'a', TRAP_TERM);
    const b = await running(pod, 'b', ['sleep', '1000']);
    const created = await createCtr(env, pod, ctrConfig('c', ['sleep', '1000']));
    const t0 = Date.now();
    await runtimeCall(env.d.client, 'StopPodSandbox', { pod_sandbox_id: pod.id });
    expect(Date.now() - t0).toBeLessThan(5000);
    for (const id of [a, b, created]) expect((await ctrStatus(env, id)).status!.state).toBe('CONTAINER_EXITED');
    const ps = await runtimeCall(env.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id });
    expect(ps.containers_statuses.map((c) => c.state)).toEqual(['CONTAINER_EXITED', 'CONTAINER_EXITED', 'CONTAINER_EXITED']);
    await runtimeCall(env.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });
    const left = await runtimeCall(env.d.client, 'ListContainers', { filter: { pod_sandbox_id: pod.id } });
    expect(left.containers).toEqual([]);
  });

  it('RemovePodSandbox of a running pod force-removes its running containers', async () => {
    const pod = await runPod(env);
    const a = await running(pod, 'a', TRAP_TERM);
    await runtimeCall(env.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });
    const all = await runtimeCall(env.d.client, 'ListContainers', {});
    expect(all.containers.map((c) => c.id)).not.toContain(a);
  });
});
