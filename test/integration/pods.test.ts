// Issue 4: pod sandboxes with pinned namespaces and real CNI plugins (bridge, host-local, portmap), as root.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { startDaemon, makeScratchDir, type TestDaemon } from '../helpers/daemon.js';
import { installGuard, removeGuard, makeNetwork, deleteBridge, bridgePorts, type TestNetwork } from '../helpers/cni.js';
import { runtimeCall } from '../../src/cli/client.js';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig.js';

const CGROUP_TOP = `/skiff-test-pods-${randomBytes(3).toString('hex')}`;
const daemons: TestDaemon[] = [];
const networks: TestNetwork[] = [];

beforeAll(() => installGuard());
afterAll(async () => {
  removeGuard();
  for (const ctl of await readdir('/sys/fs/cgroup')) await rmdir(join('/sys/fs/cgroup', ctl, CGROUP_TOP)).catch(() => undefined);
});
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    // remove whatever a failing test left behind, then stop the daemon
    const list = await runtimeCall(d.client, 'ListPodSandbox', {}).catch(() => ({ items: [] }));
    for (const p of list.items) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
    await d.cleanup();
  }
  for (const n of networks.splice(0)) deleteBridge(n);
});

async function netDaemon(opts: { portmap?: boolean; cniVersion?: string; dir?: string } = {}): Promise<{ d: TestDaemon; net: TestNetwork }> {
  const dir = opts.dir ?? (await makeScratchDir('skiff-pods-'));
  const net = await makeNetwork(dir, opts);
  networks.push(net);
  const d = await startDaemon({ dir, config: `cgroup_parent = "${CGROUP_TOP}"\n[cni]\nconf_dir = "${net.confDir}"\n` });
  daemons.push(d);
  return { d, net };
}

let seq = 0;
function podConfig(over: Partial<PodSandboxConfig> = {}, hostNet = false): PodSandboxConfig {
  seq++;
  return {
    metadata: { name: `pod-${seq}`, namespace: 'default', uid: `uid-${seq}`, attempt: 0 },
    hostname: `pod-${seq}`,
    labels: { app: 'test', n: String(seq) },
    annotations: { note: 'x' },
    linux: {
      cgroup_parent: `${CGROUP_TOP}/pod${seq}`,
      security_context: { namespace_options: { network: hostNet ? 'NODE' : 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
    ...over,
  };
}

function sh(cmd: string, args: string[], timeout = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout, encoding: 'utf8' }, (err, stdout, stderr) =>
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

async function run(d: TestDaemon, config: PodSandboxConfig, handler = ''): Promise<string> {
  return (await runtimeCall(d.client, 'RunPodSandbox', { config, runtime_handler: handler })).pod_sandbox_id;
}
async function podStatus(d: TestDaemon, id: string, verbose = false) {
  return runtimeCall(d.client, 'PodSandboxStatus', { pod_sandbox_id: id, verbose });
}
async function netnsOf(d: TestDaemon, id: string): Promise<string> {
  const s = await podStatus(d, id, true);
  return (JSON.parse(s.info.info) as { namespaces: { net: string } }).namespaces.net;
}

/** Everything a pod could leave on the machine. */
async function leftovers(d: TestDaemon, net: TestNetwork): Promise<string[]> {
  const out: string[] = [];
  const podsDir = join(d.state, 'pods');
  out.push(...(await readdir(podsDir).catch(() => [])).map((n) => `dir ${n}`));
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  out.push(...mounts.split('\n').filter((l) => l.includes(`${podsDir}/`)).map((l) => `mount ${l}`));
  out.push(...bridgePorts(net).map((l) => `veth ${l}`));
  const leases = await readdir(join(net.leaseDir, net.name)).catch(() => []);
  out.push(...leases.filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n)).map((n) => `lease ${n}`));
  for (const ctl of ['memory', 'pids', 'cpu']) {
    const dirs = await readdir(join('/sys/fs/cgroup', ctl, CGROUP_TOP), { withFileTypes: true }).catch(() => []);
    out.push(...dirs.filter((e) => e.isDirectory()).map((e) => `cgroup ${ctl}/${e.name}`));
  }
  return out;
}

const NODE = process.execPath;
const LISTEN = (port: number) => `require('net').createServer(s=>s.end('hello')).listen(${port},()=>console.log('up'))`;
const CONNECT = (host: string, port: number) =>
  `const s=require('net').connect(${port},'${host}');let b='';s.on('data',d=>b+=d);s.on('end',()=>{console.log(b);process.exit(0)});s.on('error',e=>{console.error(e.message);process.exit(2)});setTimeout(()=>process.exit(3),3000)`;

/** Starts a TCP listener inside a netns; resolves once it listens. */
function listenIn(netns: string, port: number): Promise<() => void> {
  return new Promise((res, rej) => {
    const child = execFile('nsenter', [`--net=${netns}`, NODE, '-e', LISTEN(port)]);
    child.stdout!.once('data', () => res(() => child.kill('SIGKILL')));
    child.once('exit', (c) => rej(new Error(`listener exited ${c}`)));
  });
}

describe('pod sandboxes on a CNI bridge', () => {
  it('two pods get IPs on the bridge and reach each other; status, list, stop, remove leave nothing', async () => {
    const { d, net } = await netDaemon();
    const [a, b] = await Promise.all([run(d, podConfig()), run(d, podConfig())]);
    const sa = await podStatus(d, a);
    const sb = await podStatus(d, b);
    expect(sa.status!.state).toBe('SANDBOX_READY');
    const prefix = net.subnet.split('.').slice(0, 3).join('.');
    expect(sa.status!.network!.ip.startsWith(`${prefix}.`)).toBe(true);
    expect(sb.status!.network!.ip.startsWith(`${prefix}.`)).toBe(true);
    expect(sa.status!.network!.ip).not.toBe(sb.status!.network!.ip);
    expect(sa.status!.linux!.namespaces!.options).toMatchObject({ network: 'POD', pid: 'CONTAINER', ipc: 'POD' });
    expect(sa.containers_statuses).toEqual([]);
    expect(BigInt(sa.timestamp)).toBeGreaterThan(0n);
    expect(bridgePorts(net)).toHaveLength(2);

    // a process in pod A's netns connects to pod B's IP
    const stopListener = await listenIn(await netnsOf(d, b), 8080);
    try {
      const r = await sh('nsenter', [`--net=${await netnsOf(d, a)}`, NODE, '-e', CONNECT(sb.status!.network!.ip, 8080)]);
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('hello');
    } finally {
      stopListener();
    }

    const list = await runtimeCall(d.client, 'ListPodSandbox', {});
    expect(list.items.map((p) => p.id).sort()).toEqual([a, b].sort());
    const byLabel = await runtimeCall(d.client, 'ListPodSandbox', { filter: { label_selector: { n: sa.status!.labels.n } } });
    expect(byLabel.items.map((p) => p.id)).toEqual([a]);
    expect((await runtimeCall(d.client, 'ListPodSandbox', { filter: { id: b.slice(0, 12) } })).items.map((p) => p.id)).toEqual([b]);

    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: a });
    expect((await podStatus(d, a)).status!.state).toBe('SANDBOX_NOTREADY');
    const ready = await runtimeCall(d.client, 'ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } });
    expect(ready.items.map((p) => p.id)).toEqual([b]);
    for (const id of [a, b]) {
      await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id });
      await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    }
    expect(await codeOf(podStatus(d, a))).toBe(status.NOT_FOUND);
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('survives kill -9: pods, IPs and CNI result unchanged after restart, stop/remove still work', async () => {
    const { d, net } = await netDaemon({ cniVersion: '0.4.0' });
    const ids = await Promise.all([run(d, podConfig()), run(d, podConfig())]);
    const before = await Promise.all(ids.map((id) => podStatus(d, id, true)));
    await d.stop('SIGKILL');
    daemons.splice(daemons.indexOf(d), 1);
    const d2 = await startDaemon({ dir: d.dir, config: await readFile(d.configFile, 'utf8') });
    daemons.push(d2);
    const after = await Promise.all(ids.map((id) => podStatus(d2, id, true)));
    for (const [i, s] of after.entries()) {
      expect(s.status).toEqual(before[i].status);
      expect(JSON.parse(s.info.info).cniResult).toEqual(JSON.parse(before[i].info.info).cniResult);
    }
    for (const id of ids) await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await leftovers(d2, net)).toEqual([]);
  });
});
