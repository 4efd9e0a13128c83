// Shared by the pod sandbox tests: a daemon on a test CNI network, pod configs, and a census of everything
// a pod could leave on the machine (netns pins, mounts, veths, IPAM leases, cgroups).
import { readdir, readFile } from 'node:fs/promises';
import { removeCgroupTree } from './cgroups.js';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, makeScratchDir, removeScratchDir, type TestDaemon } from './daemon.js';
import { makeNetwork, deleteBridge, bridgePorts, installGuard, removeGuard, type TestNetwork, type NetworkOptions } from './cni.js';
import { beforeAll, afterAll, afterEach } from 'vitest';
import { runtimeCall } from '../../src/cli/client.js';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig.js';

/** Daemons and networks of one test file, with the pods' cgroups under one top dir of its own. */
export class PodTestEnv {
  /** The env of a test file: forwarding guard before its tests, per-test cleanup, everything gone after. */
  static forTestFile(): PodTestEnv {
    const env = new PodTestEnv();
    beforeAll(() => installGuard());
    afterAll(async () => {
      removeGuard();
      await env.cleanupAll();
    });
    afterEach(() => env.cleanupEach());
    return env;
  }

  readonly cgroupTop = `/skiff-test-pods-${randomBytes(3).toString('hex')}`;
  readonly daemons: TestDaemon[] = [];
  readonly networks: TestNetwork[] = [];
  private readonly dirs: string[] = [];
  private seq = 0;

  daemonConfig(confDir: string, extra = ''): string {
    return `cgroup_parent = "${this.cgroupTop}"\n${extra}[cni]\nconf_dir = "${confDir}"\n`;
  }

  /** A scratch dir removed (after unmounting what is left below it) in cleanupEach. */
  async scratchDir(): Promise<string> {
    const dir = await makeScratchDir('skiff-pods-');
    this.dirs.push(dir);
    return dir;
  }

  async netDaemon(opts: NetworkOptions & { dir?: string; config?: string } = {}): Promise<{ d: TestDaemon; net: TestNetwork }> {
    const dir = opts.dir ?? (await this.scratchDir());
    const net = await makeNetwork(dir, opts);
    this.networks.push(net);
    const d = await startDaemon({ dir, config: opts.config ?? this.daemonConfig(net.confDir) });
    this.daemons.push(d);
    return { d, net };
  }

  /** Restarts a daemon on the same dirs (after a kill -9 or a clean stop). */
  async restart(d: TestDaemon): Promise<TestDaemon> {
    this.daemons.splice(this.daemons.indexOf(d), 1);
    const d2 = await startDaemon({ dir: d.dir, config: await readFile(d.configFile, 'utf8') });
    this.daemons.push(d2);
    return d2;
  }

  podConfig(over: Partial<PodSandboxConfig> = {}, hostNet = false): PodSandboxConfig {
    const seq = ++this.seq;
    return {
      metadata: { name: `pod-${seq}`, namespace: 'default', uid: `uid-${seq}`, attempt: 0 },
      hostname: `pod-${seq}`,
      labels: { app: 'test', n: String(seq) },
      annotations: { note: 'x' },
      linux: {
        cgroup_parent: `${this.cgroupTop}/pod${seq}`,
        security_context: { namespace_options: { network: hostNet ? 'NODE' : 'POD', pid: 'CONTAINER', ipc: 'POD' } },
      },
      ...over,
    };
  }

  /** afterEach: removes what a failing test left behind, stops the daemons, deletes the bridges. */
  async cleanupEach(): Promise<void> {
    for (const d of this.daemons.splice(0)) {
      const list = await runtimeCall(d.client, 'ListPodSandbox', {}).catch(() => ({ items: [] }));
      for (const p of list.items) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
      await d.cleanup();
    }
    for (const n of this.networks.splice(0)) deleteBridge(n);
    for (const dir of this.dirs.splice(0)) await removeScratchDir(dir);
  }

  /** afterAll: the cgroup top dirs (and pod dirs a failed test left in them). */
  async cleanupAll(): Promise<void> {
    await removeCgroupTree(this.cgroupTop);
  }

  /** Everything a pod could leave on the machine. */
  async leftovers(d: TestDaemon, net: TestNetwork): Promise<string[]> {
    const out: string[] = [];
    const podsDir = join(d.state, 'pods');
    out.push(...(await readdir(podsDir).catch(() => [])).map((n) => `dir ${n}`));
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    out.push(...mounts.split('\n').filter((l) => l.includes(`${podsDir}/`)).map((l) => `mount ${l}`));
    out.push(...bridgePorts(net).map((l) => `veth ${l}`));
    const leases = await readdir(join(net.leaseDir, net.name)).catch(() => []);
    out.push(...leases.filter((n) => /^\d+\.\d+\.\d+\.\d+$|:/.test(n)).map((n) => `lease ${n}`));
    // portmap's DNAT rules carry the network name in a comment
    const nat = await sh('iptables', ['-w', '5', '-t', 'nat', '-S']);
    out.push(...nat.stdout.split('\n').filter((l) => l.includes(net.name)).map((l) => `iptables ${l}`));
    // every hierarchy: v1 controllers, name=systemd and the v2 "unified" tree, where runc makes dirs too
    for (const ctl of await readdir('/sys/fs/cgroup')) {
      const dirs = await readdir(join('/sys/fs/cgroup', ctl, this.cgroupTop), { withFileTypes: true }).catch(() => []);
      out.push(...dirs.filter((e) => e.isDirectory()).map((e) => `cgroup ${ctl}/${e.name}`));
    }
    return out;
  }
}

export function sh(cmd: string, args: string[], timeout = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout, encoding: 'utf8' }, (err, stdout, stderr) =>
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

export const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

export async function runPod(d: TestDaemon, config: PodSandboxConfig, handler = ''): Promise<string> {
  return (await runtimeCall(d.client, 'RunPodSandbox', { config, runtime_handler: handler })).pod_sandbox_id;
}
export async function podStatus(d: TestDaemon, id: string, verbose = false) {
  return runtimeCall(d.client, 'PodSandboxStatus', { pod_sandbox_id: id, verbose });
}

export interface PodInfo {
  pid: number;
  namespaces: { net?: string; ipc?: string; uts?: string; pid?: string };
  files: { hostname: string; hosts: string; resolvConf: string; shm: string };
  cniResult: unknown;
  cgroupParent: string;
  networkCheck?: string;
}
export async function podInfo(d: TestDaemon, id: string): Promise<PodInfo> {
  return JSON.parse((await podStatus(d, id, true)).info.info) as PodInfo;
}
export async function netnsOf(d: TestDaemon, id: string): Promise<string> {
  return (await podInfo(d, id)).namespaces.net!;
}

export const NODE = process.execPath;
const LISTEN = (port: number, host: string) => `require('net').createServer(s=>s.end('hello')).listen(${port},'${host}',()=>console.log('up'))`;
export const CONNECT = (host: string, port: number) =>
  `const s=require('net').connect(${port},'${host}');let b='';s.on('data',d=>b+=d);s.on('end',()=>{console.log(b);process.exit(0)});s.on('error',e=>{console.error(e.message);process.exit(2)});setTimeout(()=>process.exit(3),3000)`;

/** Starts a TCP listener inside a netns; resolves once it listens. */
export function listenIn(netns: string, port: number, host = '0.0.0.0'): Promise<() => void> {
  return new Promise((res, rej) => {
    const child = execFile('nsenter', [`--net=${netns}`, NODE, '-e', LISTEN(port, host)]);
    child.stdout!.once('data', () => res(() => child.kill('SIGKILL')));
    child.once('exit', (c) => rej(new Error(`listener exited ${c}`)));
  });
}

/** Connects from inside `netns` (or the host when undefined) and returns what the listener said. */
export async function connectFrom(netns: string | undefined, host: string, port: number): Promise<{ stdout: string; stderr: string }> {
  const args = [NODE, '-e', CONNECT(host, port)];
  const r = netns ? await sh('nsenter', [`--net=${netns}`, ...args]) : await sh(args[0], args.slice(1));
  return { stdout: r.stdout.trim(), stderr: r.stderr };
}

/** Waits until the daemon has logged `text` (or `ms` passed) and says whether it did. */
export async function waitForLog(d: TestDaemon, text: string, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!d.logs().includes(text) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return d.logs().includes(text);
}
