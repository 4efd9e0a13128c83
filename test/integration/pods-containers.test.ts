// Issue 4 with real containers in the pods (runc under conmon): PodSandboxStatus lists them, Stop and
// Remove take them along, and a killed daemon finds pods and containers as they were.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { installGuard, removeGuard } from '../helpers/cni.js';
import { PodTestEnv, runPod, podStatus, sh } from '../helpers/pods.js';
import { loadBusybox } from '../helpers/registry.js';
import { runtimeCall } from '../../src/cli/client.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig.js';

const env = new PodTestEnv();
beforeAll(() => installGuard());
afterAll(async () => {
  removeGuard();
  await env.cleanupAll();
});
afterEach(async () => {
  for (const d of env.daemons) {
    const cs = await runtimeCall(d.client, 'ListContainers', {}).catch(() => ({ containers: [] }));
    for (const c of cs.containers) await runtimeCall(d.client, 'RemoveContainer', { container_id: c.id }).catch(() => undefined);
  }
  await env.cleanupEach();
});

async function startContainer(d: TestDaemon, podId: string, config: PodSandboxConfig, name: string): Promise<string> {
  const { container_id: id } = await runtimeCall(d.client, 'CreateContainer', {
    pod_sandbox_id: podId,
    config: {
      metadata: { name, attempt: 0 },
      image: { image: 'docker.io/library/busybox:latest' },
      command: ['sleep', '1000'],
      log_path: `${name}.log`,
      // as kubelet asks for shareProcessNamespace: the container joins the pod's PID namespace
      linux: { security_context: { namespace_options: { network: 'POD', pid: 'POD', ipc: 'POD' } } },
    },
    sandbox_config: config,
  });
  await runtimeCall(d.client, 'StartContainer', { container_id: id });
  return id;
}

/** conmon processes still running for a container id. */
async function conmonsOf(id: string): Promise<number> {
  const r = await sh('pgrep', ['-f', `conmon .*${id}`]);
  return r.stdout.split('\n').filter(Boolean).length;
}

function podWithContainers(d: TestDaemon, over: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  const cfg = env.podConfig(over);
  cfg.log_directory = join(d.dir, 'logs', cfg.metadata!.uid ?? 'pod');
  cfg.linux!.security_context!.namespace_options!.pid = 'POD';
  return cfg;
}

describe('pods with running containers', () => {
  it('status lists the containers; a container shares the pod hostname, IP, PID namespace and files; Stop then Remove take them along', async () => {
    const { d, net } = await env.netDaemon();
    await loadBusybox(d);
    const cfg = podWithContainers(d, { hostname: 'pod-with-ctrs', dns_config: { servers: ['10.89.0.53'], searches: ['svc.local'], options: [] } });
    const pod = await runPod(d, cfg);
    const [c1, c2] = [await startContainer(d, pod, cfg, 'one'), await startContainer(d, pod, cfg, 'two')];
    const s = await podStatus(d, pod);
    expect(s.containers_statuses.map((c) => [c.id, c.state]).sort()).toEqual([[c1, 'CONTAINER_RUNNING'], [c2, 'CONTAINER_RUNNING']].sort());
    expect(BigInt(s.timestamp)).toBeGreaterThan(0n);
    const inCtr = async (cmd: string[]) => (await runtimeCall(d.client, 'ExecSync', { container_id: c1, cmd, timeout: 10 }, 30_000)).stdout.toString().trim();
    expect(await inCtr(['hostname'])).toBe('pod-with-ctrs');
    expect(await inCtr(['cat', '/etc/resolv.conf'])).toBe('search svc.local\nnameserver 10.89.0.53');
    expect(await inCtr(['ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain(`inet ${s.status!.network!.ip}/`);
    // pid POD: the pod init is PID 1 and both containers' processes are visible
    expect(await inCtr(['cat', '/proc/1/comm'])).toBe('catatonit');
    expect((await inCtr(['ps', '-o', 'comm'])).split('\n').filter((l) => l.trim() === 'sleep')).toHaveLength(2);

    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: pod });
    const stopped = await podStatus(d, pod);
    expect(stopped.status!.state).toBe('SANDBOX_NOTREADY');
    expect(stopped.containers_statuses.map((c) => c.state)).toEqual(['CONTAINER_EXITED', 'CONTAINER_EXITED']);
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: pod });
    expect((await runtimeCall(d.client, 'ListContainers', {})).containers).toEqual([]);
    expect(await conmonsOf(c1)).toBe(0);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('RemovePodSandbox of a ready pod with a running container removes it too, leaving nothing', async () => {
    const { d, net } = await env.netDaemon();
    await loadBusybox(d);
    const cfg = podWithContainers(d);
    const pod = await runPod(d, cfg);
    const c = await startContainer(d, pod, cfg, 'busy');
    const pid = Number((JSON.parse((await runtimeCall(d.client, 'ContainerStatus', { container_id: c, verbose: true })).info.info) as { pid: number }).pid);
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: pod });
    expect((await runtimeCall(d.client, 'ListContainers', {})).containers).toEqual([]);
    expect(await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => 'gone')).not.toBe('sleep\n');
    expect(await conmonsOf(c)).toBe(0);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('kill -9 of the daemon with a running container: pod, IP and container unchanged after restart; remove works', async () => {
    const { d, net } = await env.netDaemon();
    await loadBusybox(d);
    const cfg = podWithContainers(d);
    const pod = await runPod(d, cfg);
    const c = await startContainer(d, pod, cfg, 'survivor');
    const before = await podStatus(d, pod);
    await d.stop('SIGKILL');
    const d2 = await env.restart(d);
    const after = await podStatus(d2, pod);
    expect(after.status).toEqual(before.status);
    expect(after.containers_statuses.map((x) => [x.id, x.state])).toEqual([[c, 'CONTAINER_RUNNING']]);
    await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: pod });
    expect(await conmonsOf(c)).toBe(0);
    expect(await env.leftovers(d2, net)).toEqual([]);
  });
});
