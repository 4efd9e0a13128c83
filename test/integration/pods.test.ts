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

describe('pod sandboxes: host namespaces, sysctls, names, handlers', () => {
  it('a hostNetwork pod has no netns, no CNI call, an empty network status, and echoes its namespace options', async () => {
    // no CNI config at all: only hostNetwork pods may run
    const dir = await makeScratchDir('skiff-pods-');
    const d = await startDaemon({ dir, config: `cgroup_parent = "${CGROUP_TOP}"\n[cni]\nconf_dir = "${join(dir, 'none')}"\n` });
    daemons.push(d);
    const refused = await runtimeCall(d.client, 'RunPodSandbox', { config: podConfig() }).catch((e: { code: number; details: string }) => e);
    expect(refused).toMatchObject({ code: status.FAILED_PRECONDITION });
    expect((refused as { details: string }).details).toContain('only hostNetwork pods');
    const asked = { network: 'NODE', pid: 'NODE', ipc: 'NODE', target_id: '', userns_options: null } as const;
    const cfg = podConfig({}, true);
    cfg.linux!.security_context = { namespace_options: asked };
    const id = await run(d, cfg);
    for (let i = 0; i < 2; i++) {
      const s = await podStatus(d, id, true);
      expect(s.status!.network).toEqual({ ip: '', additional_ips: [] });
      expect(s.status!.linux!.namespaces!.options).toEqual(asked);
      const info = JSON.parse(s.info.info) as { namespaces: Record<string, unknown>; cniResult: unknown; files: { shm: string; hosts: string } };
      expect(info.namespaces).toEqual({});
      expect(info.cniResult).toBeNull();
      expect(info.files.shm).toBe('/dev/shm');
      // the pod's hosts file is the host's: its processes see the host's network
      expect(await readFile(info.files.hosts, 'utf8')).toBe(await readFile('/etc/hosts', 'utf8'));
    }
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await readdir(join(d.state, 'pods'))).toEqual([]);
  });

  it('applies namespaced sysctls inside the pod and rejects the others without touching the host', async () => {
    const { d, net } = await netDaemon();
    const hostRange = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
    const cfg = podConfig();
    cfg.linux!.sysctls = { 'net.ipv4.ip_local_port_range': '20000 20100', 'kernel.shmmni': '1234' };
    const id = await run(d, cfg);
    const netns = await netnsOf(d, id);
    const inPod = await sh('nsenter', [`--net=${netns}`, 'cat', '/proc/sys/net/ipv4/ip_local_port_range']);
    expect(inPod.stdout.trim().split(/\s+/)).toEqual(['20000', '20100']);
    expect(await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).toBe(hostRange);
    const ipcns = (JSON.parse((await podStatus(d, id, true)).info.info) as { namespaces: { ipc: string } }).namespaces.ipc;
    expect((await sh('nsenter', [`--ipc=${ipcns}`, 'cat', '/proc/sys/kernel/shmmni'])).stdout.trim()).toBe('1234');

    const bad: [Record<string, string>, boolean][] = [
      [{ 'kernel.hostname': 'x' }, false],
      [{ 'vm.swappiness': '1' }, false],
      [{ 'net.ipv4.ip_forward': '0' }, true],
      [{ 'kernel.shmmax': '1' }, true],
      [{ '../../etc/passwd': 'x' }, false],
    ];
    for (const [sysctls, hostNamespaces] of bad) {
      const c = podConfig({}, hostNamespaces);
      if (hostNamespaces) c.linux!.security_context!.namespace_options!.ipc = 'NODE';
      c.linux!.sysctls = sysctls;
      expect(await codeOf(run(d, c)), JSON.stringify(sysctls)).toBe(status.INVALID_ARGUMENT);
    }
    expect(await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).toBe('1\n');
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('takes any UTF-8 name (CJK, emoji), refuses a duplicate name and an unknown runtime handler', async () => {
    const { d, net } = await netDaemon();
    const names = ['ポッド-テスト', '🚀🐳-pod', 'a;b=c d'];
    const ids: string[] = [];
    for (const name of names) {
      ids.push(await run(d, podConfig({ metadata: { name, namespace: '名前空間', uid: name, attempt: 0 } })));
    }
    for (const [i, id] of ids.entries()) {
      expect(id).toMatch(/^[0-9a-f]{64}$/);
      expect((await podStatus(d, id)).status!.metadata!.name).toBe(names[i]);
    }
    const dup = podConfig({ metadata: { name: names[0], namespace: '名前空間', uid: names[0], attempt: 0 } });
    expect(await codeOf(run(d, dup))).toBe(status.ALREADY_EXISTS);
    const unknown = await run(d, podConfig(), 'no-such-handler').catch((e: { code: number; details: string }) => e);
    expect(unknown).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect((unknown as { details: string }).details).toContain('no-such-handler');
    expect((await podStatus(d, await run(d, podConfig(), 'crun'))).status!.runtime_handler).toBe('crun');
    for (const p of (await runtimeCall(d.client, 'ListPodSandbox', {})).items) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id });
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('holds a pod-shared PID namespace with catatonit, killed on stop', async () => {
    const { d, net } = await netDaemon();
    const cfg = podConfig();
    cfg.linux!.security_context!.namespace_options!.pid = 'POD';
    const id = await run(d, cfg);
    const info = JSON.parse((await podStatus(d, id, true)).info.info) as { pid: number; namespaces: { pid: string } };
    expect(await readFile(`/proc/${info.pid}/comm`, 'utf8')).toBe('catatonit\n');
    const inside = await sh('nsenter', [`--pid=${info.namespaces.pid}`, '--', 'sh', '-c', 'echo $$'], 5000);
    expect(inside.code).toBe(0);
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id });
    const comm = await readFile(`/proc/${info.pid}/comm`, 'utf8').catch(() => 'gone');
    expect(comm).not.toBe('catatonit\n');
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await leftovers(d, net)).toEqual([]);
  });
});

describe('pod sandboxes: teardown never leaks', () => {
  it('failed runs (missing plugin after bridge, bad conflist) leave no netns, veth, lease, mount or cgroup', async () => {
    const dir = await makeScratchDir('skiff-pods-');
    const net = await makeNetwork(dir, { extraPlugins: [{ type: 'skpod-no-such-plugin' }] });
    networks.push(net);
    const d = await startDaemon({ dir, config: `cgroup_parent = "${CGROUP_TOP}"\n[cni]\nconf_dir = "${net.confDir}"\n` });
    daemons.push(d);
    const failed = await run(d, podConfig()).catch((e: { code: number; details: string }) => e);
    expect(failed).toMatchObject({ code: status.FAILED_PRECONDITION });
    expect((failed as { details: string }).details).toContain('skpod-no-such-plugin');
    expect(await leftovers(d, net)).toEqual([]);
    // a conflist that is not JSON
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(net.confDir, '10-skpod.conflist'), '{ "cniVersion": "1.0.0", "name": ');
    expect(await codeOf(run(d, podConfig()))).toBe(status.FAILED_PRECONDITION);
    expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('ten concurrent Stop/Remove calls on one pod all succeed; many pods stop and go without a trace', async () => {
    const { d, net } = await netDaemon();
    const ids = await Promise.all(Array.from({ length: 6 }, () => run(d, podConfig())));
    const calls = Array.from({ length: 10 }, (_, i) =>
      runtimeCall(d.client, i % 2 ? 'RemovePodSandbox' : 'StopPodSandbox', { pod_sandbox_id: ids[0] }),
    );
    await Promise.all(calls);
    await Promise.all(ids.slice(1).map((id) => runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id })));
    await Promise.all(ids.map((id) => runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id })));
    // again: already gone is fine
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: ids[0] });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: ids[0] });
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('a cancelled RunPodSandbox leaves either a whole pod or nothing', async () => {
    const { d, net } = await netDaemon();
    for (const ms of [5, 30, 80]) {
      await runtimeCall(d.client, 'RunPodSandbox', { config: podConfig() }, ms).catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const pods = (await runtimeCall(d.client, 'ListPodSandbox', {})).items;
    for (const p of pods) expect(p.state).toBe('SANDBOX_READY');
    for (const p of pods) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id });
    expect(await leftovers(d, net)).toEqual([]);
  });

  it('a damaged or half-built record found at start-up is logged and cleaned, never fatal', async () => {
    const { d, net } = await netDaemon();
    const good = await run(d, podConfig());
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(d.root, 'pods', `${'ab'.repeat(32)}.json`), '{"id": "abab');
    await d.stop('SIGKILL');
    daemons.splice(daemons.indexOf(d), 1);
    const d2 = await startDaemon({ dir: d.dir, config: await readFile(d.configFile, 'utf8') });
    daemons.push(d2);
    expect(d2.logs()).toContain('damaged pod record moved aside');
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items.map((p) => p.id)).toEqual([good]);
    await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: good });
    expect(await leftovers(d2, net)).toEqual([]);
  });
});

describe('pod sandboxes: port mappings', () => {
  it('a hostPort mapping reaches a listener inside the pod over loopback (portmap)', async () => {
    const { d, net } = await netDaemon({ portmap: true });
    const hostPort = 30000 + Math.floor(Math.random() * 20000);
    const id = await run(d, podConfig({ port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort, host_ip: '' }] }));
    const stopListener = await listenIn(await netnsOf(d, id), 8080);
    try {
      const r = await sh(NODE, ['-e', CONNECT('127.0.0.1', hostPort)]);
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('hello');
    } finally {
      stopListener();
    }
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    const nat = await sh('iptables', ['-w', '5', '-t', 'nat', '-S']);
    expect(nat.stdout).not.toContain(`--dport ${hostPort}`);
    expect(await leftovers(d, net)).toEqual([]);
  });
});
