// Helpers for the issue-6 tests with real containers: a daemon on the k129 subnet (10.92.0.0/16, bridges
// `sk129*`, its own forwarding guard and cgroup tree), busybox loaded, runc and crun handlers (crun marked
// as able to do idmapped mounts: crun 1.8.1 has no `features` command to say so).
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { beforeAll, afterAll } from 'vitest';
import { removeCgroupTree } from './cgroups.js';
import { startDaemon, makeScratchDir, removeScratchDir } from './daemon.js';
import { installGuard, removeGuard, makeNetwork, deleteBridge } from './cni.js';
import { loadBusybox } from './registry.js';
import { destroyEnv, type OciEnv } from './containers.js';
import { runtimeCall } from '../../src/cli/client.js';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig.js';

export const K129_GUARD = 'SKIFF-K129-GUARD';
export const K129_NET16 = '10.92';
export const K129_CGROUP_TOP = `/skiff-test-k129-${randomBytes(3).toString('hex')}`;
export const BUSYBOX = 'docker.io/library/busybox:latest';

export const HANDLERS_CONFIG = '[runtimes.crun]\npath = "crun"\nidmap_mounts = true\n';

export function setupK129Guard(): void {
  installGuard(K129_GUARD, `${K129_NET16}.0.0/16`);
}

export async function teardownK129(): Promise<void> {
  removeGuard(K129_GUARD);
  await removeCgroupTree(K129_CGROUP_TOP);
}

/** destroyEnv, then the scratch dir too (the daemon was given it, so its cleanup leaves it). */
export async function destroyK129(env: OciEnv): Promise<void> {
  await destroyEnv(env);
  await removeScratchDir(env.dir);
}

/** A daemon with the k129 network, both handlers, busybox loaded; `extraConfig` is appended (TOML). */
export async function k129Daemon(extraConfig = ''): Promise<OciEnv> {
  const dir = await makeScratchDir('sk129-');
  const net = await makeNetwork(dir, { prefix: 'sk129', net16: K129_NET16 });
  try {
    const d = await startDaemon({
      dir,
      config: `cgroup_parent = "${K129_CGROUP_TOP}"\n${extraConfig}\n${HANDLERS_CONFIG}\n[cni]\nconf_dir = "${net.confDir}"\n`,
    });
    const env = { d, net, dir, logDir: join(dir, 'logs') };
    try {
      await loadBusybox(d);
      await loadBusybox(d, BUSYBOX, 'crun');
    } catch (err) {
      await destroyK129(env);
      throw err;
    }
    return env;
  } catch (err) {
    deleteBridge(net);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the daemon (SIGTERM) and starts a new one on the same dirs and config; env.d is replaced. */
export async function restartK129(env: OciEnv): Promise<void> {
  const config = await readFile(env.d.configFile, 'utf8');
  env.d.client.close();
  await env.d.stop();
  env.d = await startDaemon({ dir: env.dir, config });
}

let seq = 0;
export function k129PodConfig(env: OciEnv, over: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  seq++;
  const name = `k129-${seq}-${randomBytes(2).toString('hex')}`;
  return {
    metadata: { name, namespace: 'default', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    log_directory: join(env.logDir, name),
    labels: { app: 'k129-test' },
    linux: { cgroup_parent: `${K129_CGROUP_TOP}/${name}`, security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...over,
  };
}

/** A POD-mode user namespace mapping 0..65535 inside to 100000.. on the host. */
export const USERNS_MAPPING = [{ host_id: 100000, container_id: 0, length: 65536 }];

export function usernsPodConfig(env: OciEnv): PodSandboxConfig {
  const base = k129PodConfig(env);
  return {
    ...base,
    linux: {
      ...base.linux,
      security_context: {
        namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD', userns_options: { mode: 'POD', uids: USERNS_MAPPING, gids: USERNS_MAPPING } },
      },
    },
  };
}

export async function runK129Pod(env: OciEnv, config = k129PodConfig(env), handler = ''): Promise<{ id: string; config: PodSandboxConfig }> {
  const r = await runtimeCall(env.d.client, 'RunPodSandbox', { config, runtime_handler: handler });
  return { id: r.pod_sandbox_id, config };
}

export function k129CtrConfig(name: string, command: string[], over: Partial<ContainerConfig> = {}): ContainerConfig {
  return { metadata: { name, attempt: 0 }, image: { image: BUSYBOX }, command, log_path: `${name}.log`, labels: { ctr: name }, ...over };
}

/** A test file's k129 daemon: guard and daemon set up before its tests, all of it torn down after. */
export function k129Suite(): { env: () => OciEnv } {
  let env: OciEnv | undefined;
  beforeAll(async () => {
    setupK129Guard();
    env = await k129Daemon();
  });
  afterAll(async () => {
    if (env) await destroyK129(env);
    await teardownK129();
  });
  return {
    env: () => {
      if (!env) throw new Error('k129 daemon not started');
      return env;
    },
  };
}
