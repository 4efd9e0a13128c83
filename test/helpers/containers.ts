// Helpers for container tests: a daemon with a CNI bridge on the oci subnet (10.90.0.0/16, `skoci*`),
// busybox loaded, pods and containers made with sensible defaults.
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, makeScratchDir, removeScratchDir, runCli, type TestDaemon, type StartOptions } from './daemon.js';
import { busyboxEntries, image, layer, ociArchive, type LayerEntry } from './images.js';
import { installGuard, removeGuard, makeNetwork, deleteBridge, type TestNetwork } from './cni.js';
import { loadBusybox } from './registry.js';
import { removeCgroupTree } from './cgroups.js';
import { runtimeCall } from '../../src/cli/client.js';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig.js';

export const OCI_GUARD = 'SKIFF-OCI-GUARD';
export const OCI_NET16 = '10.90';
export const CGROUP_TOP = `/skiff-test-oci-${randomBytes(3).toString('hex')}`;
export const BUSYBOX = 'docker.io/library/busybox:latest';

export interface OciEnv {
  d: TestDaemon;
  net: TestNetwork;
  dir: string;
  logDir: string;
}

export function setupGuard(): void {
  installGuard(OCI_GUARD, `${OCI_NET16}.0.0/16`);
}

export async function teardownGuard(): Promise<void> {
  removeGuard(OCI_GUARD);
  await removeCgroupTree(CGROUP_TOP);
}

export const CRUN_CONFIG = '[runtimes.crun]\npath = "crun"\n';

/** A daemon (fresh dir, or `dir` of an earlier one) with the test network and busybox loaded. */
export async function ociDaemon(opts: { dir?: string; net?: TestNetwork; extraConfig?: string; load?: boolean; start?: StartOptions } = {}): Promise<OciEnv> {
  const dir = opts.dir ?? (await makeScratchDir('skoci-'));
  const net = opts.net ?? (await makeNetwork(dir, { prefix: 'skoci', net16: OCI_NET16 }));
  const d = await startDaemon({
    ...opts.start,
    dir,
    config: `cgroup_parent = "${CGROUP_TOP}"\n${opts.extraConfig ?? ''}\n[cni]\nconf_dir = "${net.confDir}"\n`,
  });
  if (opts.load !== false) await loadBusybox(d);
  return { d, net, dir, logDir: join(dir, 'logs') };
}

/** Removes every container and pod, stops the daemon, deletes the bridge and the dir. */
export async function destroyEnv(env: OciEnv): Promise<void> {
  const cs = await runtimeCall(env.d.client, 'ListContainers', {}).catch(() => ({ containers: [] }));
  for (const c of cs.containers) await runtimeCall(env.d.client, 'RemoveContainer', { container_id: c.id }).catch(() => undefined);
  const ps = await runtimeCall(env.d.client, 'ListPodSandbox', {}).catch(() => ({ items: [] }));
  for (const p of ps.items) await runtimeCall(env.d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
  await env.d.cleanup();
  deleteBridge(env.net);
  // the daemon helper keeps a dir it was given; this one is ours
  await removeScratchDir(env.dir);
  // SKOCI_DAEMON_LOG=<file>: keep the daemon's log for debugging a failed run
  if (process.env.SKOCI_DAEMON_LOG) await writeFile(process.env.SKOCI_DAEMON_LOG, env.d.logs());
}

let seq = 0;
export function podConfig(env: OciEnv, over: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  seq++;
  const name = `pod-${seq}-${randomBytes(2).toString('hex')}`;
  return {
    metadata: { name, namespace: 'default', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    log_directory: join(env.logDir, name),
    labels: { app: 'oci-test' },
    linux: { cgroup_parent: `${CGROUP_TOP}/${name}`, security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...over,
  };
}

export function ctrConfig(name: string, command: string[], over: Partial<ContainerConfig> = {}): ContainerConfig {
  return {
    metadata: { name, attempt: 0 },
    image: { image: BUSYBOX },
    command,
    log_path: `${name}.log`,
    labels: { ctr: name },
    ...over,
  };
}

export async function runPod(env: OciEnv, config = podConfig(env), handler = ''): Promise<{ id: string; config: PodSandboxConfig }> {
  const r = await runtimeCall(env.d.client, 'RunPodSandbox', { config, runtime_handler: handler });
  return { id: r.pod_sandbox_id, config };
}

export async function createCtr(env: OciEnv, pod: { id: string; config: PodSandboxConfig }, config: ContainerConfig): Promise<string> {
  const r = await runtimeCall(env.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
  return r.container_id;
}

export async function startCtr(env: OciEnv, id: string): Promise<void> {
  await runtimeCall(env.d.client, 'StartContainer', { container_id: id });
}

export async function ctrStatus(env: OciEnv, id: string, verbose = false) {
  return runtimeCall(env.d.client, 'ContainerStatus', { container_id: id, verbose });
}

/** Polls until the container is exited (or the deadline passes); returns its status. */
export async function waitExited(env: OciEnv, id: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await ctrStatus(env, id);
    if (s.status?.state === 'CONTAINER_EXITED' || Date.now() > deadline) return s.status!;
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function exec(env: OciEnv, id: string, cmd: string[], timeout = 0) {
  return runtimeCall(env.d.client, 'ExecSync', { container_id: id, cmd, timeout }, 120_000);
}

/**
 * Loads a busybox-based image under `name` with `config` merged into its image config and extra files
 * (e.g. an /etc/passwd of its own) laid over busybox's.
 */
export async function loadImage(env: OciEnv, name: string, config: Record<string, unknown>, extra: LayerEntry[] = [], handler?: string): Promise<string> {
  const names = new Set(extra.map((e) => e.name));
  const img = image([await layer([...busyboxEntries().filter((e) => !names.has(e.name)), ...extra])], { config });
  const dir = await mkdtemp(join(tmpdir(), 'skoci-img-'));
  try {
    const file = join(dir, 'img.tar');
    await writeFile(file, await ociArchive(img, name));
    const r = await runCli(['-r', env.d.socket, 'load', file, ...(handler ? ['--runtime-handler', handler] : [])]);
    if (r.code !== 0) throw new Error(`skiff load failed: ${r.stderr}`);
    return name;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
