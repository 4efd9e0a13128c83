// Issue 4, the rest of the network and lifecycle cases: network readiness, CNI CHECK, bandwidth, dual
// stack, host network, pod files, pod cgroup limits, records lost or caught mid-ADD, cancelled runs.
import { describe, it, expect } from 'vitest';
import { readFile, readdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeNetwork, writeSlowPlugin, writeFailingDelPlugin, type TestNetwork } from '../helpers/cni.js';
import { PodTestEnv, sh, codeOf, runPod, podStatus, podInfo, netnsOf, listenIn, connectFrom, waitForLog } from '../helpers/pods.js';
import { runtimeCall } from '../../src/cli/client.js';

const env = PodTestEnv.forTestFile();

async function networkCondition(d: TestDaemon) {
  const s = await runtimeCall(d.client, 'Status', {});
  return s.status!.conditions.find((c) => c.type === 'NetworkReady')!;
}

/** The host side of a pod's veth: the bridge port whose peer is the pod's eth0. */
async function hostVeth(netns: string): Promise<string> {
  // "2: eth0@if145: ..." inside the pod names the host side's index (sysfs would show the host's view)
  const inPod = await sh('nsenter', [`--net=${netns}`, 'ip', '-o', 'link', 'show', 'eth0']);
  const peer = /@if(\d+):/.exec(inPod.stdout)![1];
  const links = await sh('ip', ['-o', 'link']);
  const line = links.stdout.split('\n').find((l) => l.startsWith(`${peer}:`));
  return line!.split(':')[1].trim().split('@')[0];
}

describe('network readiness and CNI CHECK', () => {
  it('Status says NetworkReady=false with the reason for a bad conflist or a missing plugin', async () => {
    const { d, net } = await env.netDaemon();
    expect((await networkCondition(d)).status).toBe(true);
    const file = join(net.confDir, '10-skpod.conflist');
    const good = await readFile(file, 'utf8');
    await writeFile(file, '{ "cniVersion": "1.0.0", "name": ');
    let c = await networkCondition(d);
    expect(c).toMatchObject({ status: false, reason: 'NetworkPluginNotReady' });
    expect(c.message).toContain('not valid JSON');
    await writeFile(file, good.replace('"host-local"', '"skpod-missing-ipam"'));
    c = await networkCondition(d);
    expect(c.status).toBe(false);
    expect(c.message).toContain('skpod-missing-ipam');
    await writeFile(file, good.replace('"bridge"', '"skpod-missing"'));
    expect((await networkCondition(d)).message).toContain('"skpod-missing" not found');
    await writeFile(file, good);
    expect((await networkCondition(d)).status).toBe(true);
  });

  it.each(['1.0.0', '0.4.0'])('CHECK (spec %s): verbose status reports the network healthy, then broken once the pod lost its address; logged at restart', async (cniVersion) => {
    const { d } = await env.netDaemon({ cniVersion });
    const id = await runPod(d, env.podConfig());
    expect((await podInfo(d, id)).networkCheck, 'healthy').toBe('ok');
    expect((await podStatus(d, id)).info).toEqual({}); // not verbose: no CHECK, no info
    const ip = (await podStatus(d, id)).status!.network!.ip;
    await sh('nsenter', [`--net=${await netnsOf(d, id)}`, 'ip', 'addr', 'flush', 'dev', 'eth0']);
    const broken = (await podInfo(d, id)).networkCheck!;
    expect(broken).not.toBe('ok');
    expect(broken).toContain('CNI CHECK failed');
    await d.stop('SIGKILL');
    const d2 = await env.restart(d);
    expect(await waitForLog(d2, 'CNI CHECK failed')).toBe(true);
    // the pod is still listed as it was (kubelet decides what to do with it), with its IP
    expect((await podStatus(d2, id)).status!.network!.ip).toBe(ip);
    await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: id });
  });

  it('CHECK is skipped when the conflist says disableCheck', async () => {
    const dir = await env.scratchDir();
    const net = await makeNetwork(dir);
    env.networks.push(net);
    const file = join(net.confDir, '10-skpod.conflist');
    const conf = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...conf, disableCheck: true }));
    const d = await startDaemon({ dir, config: env.daemonConfig(net.confDir) });
    env.daemons.push(d);
    const id = await runPod(d, env.podConfig());
    await sh('nsenter', [`--net=${await netnsOf(d, id)}`, 'ip', 'addr', 'flush', 'dev', 'eth0']);
    expect((await podInfo(d, id)).networkCheck).toBe('disabled by the network config');
  });
});

describe('capabilities, dual stack, host network', () => {
  it('passes bandwidth annotations to the bandwidth plugin (tbf on the host veth) and leaves no ifb behind', async () => {
    const { d, net } = await env.netDaemon({ bandwidth: true });
    const ifbBefore = (await sh('ip', ['-o', 'link', 'show', 'type', 'ifb'])).stdout;
    const id = await runPod(
      d,
      env.podConfig({ annotations: { 'kubernetes.io/ingress-bandwidth': '1M', 'kubernetes.io/egress-bandwidth': '2M' } }),
    );
    const veth = await hostVeth(await netnsOf(d, id));
    const qdisc = (await sh('tc', ['qdisc', 'show', 'dev', veth])).stdout;
    expect(qdisc).toMatch(/tbf .*rate 1Mbit/);
    const ifbDuring = (await sh('ip', ['-o', 'link', 'show', 'type', 'ifb'])).stdout;
    expect(ifbDuring.split('\n').length).toBeGreaterThan(ifbBefore.split('\n').length);
    expect(ifbDuring).toMatch(/tbf|bwp/);
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect((await sh('ip', ['-o', 'link', 'show', 'type', 'ifb'])).stdout).toBe(ifbBefore);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('a bad bandwidth annotation is INVALID_ARGUMENT before anything is made', async () => {
    const { d, net } = await env.netDaemon({ bandwidth: true });
    expect(await codeOf(runPod(d, env.podConfig({ annotations: { 'kubernetes.io/ingress-bandwidth': 'fast' } })))).toBe(status.INVALID_ARGUMENT);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('gives v4 and v6 IPs when both ranges are configured; pods reach each other over v6', async () => {
    const { d, net } = await env.netDaemon({ dualStack: true });
    const [a, b] = await Promise.all([runPod(d, env.podConfig()), runPod(d, env.podConfig())]);
    const sa = (await podStatus(d, a)).status!.network!;
    const sb = (await podStatus(d, b)).status!.network!;
    expect(sa.ip).toMatch(/^10\.89\.\d+\.\d+$/);
    expect(sa.additional_ips.map((x) => x.ip)).toEqual([expect.stringMatching(/^fd89:[0-9a-f]+::[0-9a-f]+$/)]);
    const v6b = sb.additional_ips[0].ip;
    const stop = await listenIn(await netnsOf(d, b), 8081, '::');
    try {
      expect(await connectFrom(await netnsOf(d, a), v6b, 8081)).toEqual({ stdout: 'hello', stderr: '' });
    } finally {
      stop();
    }
    for (const id of [a, b]) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('a hostNetwork pod sees the host interfaces (its init runs in the host netns)', async () => {
    const { d } = await env.netDaemon();
    const cfg = env.podConfig({}, true);
    cfg.linux!.security_context!.namespace_options!.pid = 'POD';
    const id = await runPod(d, cfg);
    const { pid } = await podInfo(d, id);
    expect(pid).toBeGreaterThan(0);
    const { readlink } = await import('node:fs/promises');
    expect(await readlink(`/proc/${pid}/ns/net`)).toBe(await readlink('/proc/self/ns/net'));
    const names = (t: string) => t.split('\n').filter(Boolean).map((l) => l.split(':')[1].trim());
    // other tests add and remove links meanwhile: compare two listings taken back to back, a few tries
    let same = false;
    for (let i = 0; i < 5 && !same; i++) {
      const [inPod, host] = await Promise.all([sh('nsenter', ['-t', String(pid), '--net', 'ip', '-o', 'link', 'show']), sh('ip', ['-o', 'link', 'show'])]);
      expect(names(inPod.stdout)).toContain('eth0');
      same = JSON.stringify(names(inPod.stdout)) === JSON.stringify(names(host.stdout));
    }
    expect(same).toBe(true);
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
  });
});

describe('pod files and cgroup', () => {
  it('prepares hostname (UTS), hosts, resolv.conf from DNSConfig and a 64 MiB /dev/shm', async () => {
    const { d, net } = await env.netDaemon();
    const cfg = env.podConfig({
      hostname: 'web-1',
      dns_config: { servers: ['10.89.0.10', 'fd89::10'], searches: ['ns.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] },
    });
    const id = await runPod(d, cfg);
    const info = await podInfo(d, id);
    const ip = (await podStatus(d, id)).status!.network!.ip;
    expect(await readFile(info.files.resolvConf, 'utf8')).toBe(
      'search ns.svc.cluster.local svc.cluster.local\nnameserver 10.89.0.10\nnameserver fd89::10\noptions ndots:5\n',
    );
    expect(await readFile(info.files.hosts, 'utf8')).toContain(`${ip}\tweb-1\n`);
    expect(await readFile(info.files.hosts, 'utf8')).toMatch(/^127\.0\.0\.1\tlocalhost$/m);
    expect(await readFile(info.files.hostname, 'utf8')).toBe('web-1\n');
    expect((await sh('nsenter', [`--uts=${info.namespaces.uts}`, 'hostname'])).stdout.trim()).toBe('web-1');
    const shm = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === info.files.shm)!;
    expect(shm).toMatch(/ - tmpfs shm rw,.*size=65536k/);
    expect(shm).toMatch(/nosuid,nodev,noexec/);
    const bad = env.podConfig({ dns_config: { servers: ['1.1.1.1 evil'], searches: [], options: [] } });
    expect(await codeOf(runPod(d, bad))).toBe(status.INVALID_ARGUMENT);
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('caps a pod cgroup skiff created at resources + overhead', async () => {
    const { d, net } = await env.netDaemon();
    const mi = 1024 * 1024;
    const cfg = env.podConfig();
    cfg.linux!.resources = { memory_limit_in_bytes: 64 * mi, cpu_period: 100_000, cpu_quota: 50_000, cpu_shares: 512 };
    cfg.linux!.overhead = { memory_limit_in_bytes: 16 * mi, cpu_period: 100_000, cpu_quota: 10_000, cpu_shares: 64 };
    const id = await runPod(d, cfg);
    const parent = (await podInfo(d, id)).cgroupParent;
    const read = (ctl: string, file: string) => readFile(join('/sys/fs/cgroup', ctl, parent, file), 'utf8').then((t) => t.trim());
    expect(await read('memory', 'memory.limit_in_bytes')).toBe(String(80 * mi));
    expect(await read('cpu', 'cpu.cfs_quota_us')).toBe('60000');
    expect(await read('cpu', 'cpu.cfs_period_us')).toBe('100000');
    expect(await read('cpu', 'cpu.shares')).toBe('576');
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });
});

describe('records lost, runs interrupted', () => {
  async function slowDaemon(ms: number): Promise<{ d: TestDaemon; net: TestNetwork }> {
    const dir = await env.scratchDir();
    const bin = await writeSlowPlugin(dir, ms);
    return env.netDaemon({
      dir,
      extraPlugins: [{ type: 'skpod-slow' }],
      config: env.daemonConfig(join(dir, 'net.d')).replace('[cni]\n', `[cni]\nbin_dir = ["${bin}", "/usr/lib/cni"]\n`),
    });
  }

  it('a CNI DEL that fails keeps the pod (NOTREADY) and fails Stop/RemovePodSandbox until DEL succeeds', async () => {
    const dir = await env.scratchDir();
    const marker = join(dir, 'allow-del');
    const bin = await writeFailingDelPlugin(dir, marker);
    const { d, net } = await env.netDaemon({
      dir,
      extraPlugins: [{ type: 'skpod-faildel' }],
      config: env.daemonConfig(join(dir, 'net.d')).replace('[cni]\n', `[cni]\nbin_dir = ["${bin}", "/usr/lib/cni"]\n`),
    });
    const id = await runPod(d, env.podConfig());
    for (const rpc of ['StopPodSandbox', 'RemovePodSandbox'] as const) {
      const err = await runtimeCall(d.client, rpc, { pod_sandbox_id: id }).then(
        () => undefined,
        (e: { code: number; details: string }) => e,
      );
      expect(err, rpc).toMatchObject({ code: status.INTERNAL });
      expect(err!.details).toContain('cni del');
      expect(err!.details).toContain(id);
      const items = (await runtimeCall(d.client, 'ListPodSandbox', {})).items;
      expect(items.map((p) => [p.id, p.state])).toEqual([[id, 'SANDBOX_NOTREADY']]);
    }
    // the record survives a restart too, so the retry can still come
    await d.stop('SIGTERM');
    const d2 = await env.restart(d);
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items.map((p) => p.id)).toEqual([id]);
    await writeFile(marker, '');
    await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await env.leftovers(d2, net)).toEqual([]);
  });

  it('a pod whose record is lost (truncated) gets its network released at start-up: no lease, veth or mount left', async () => {
    const { d, net } = await env.netDaemon({ portmap: true });
    const hostPort = 30000 + Math.floor(Math.random() * 20000);
    const id = await runPod(d, env.podConfig({ port_mappings: [{ protocol: 'TCP', container_port: 80, host_port: hostPort, host_ip: '' }] }));
    await d.stop('SIGKILL');
    await writeFile(join(d.root, 'pods', `${id}.json`), '{"id":"');
    const d2 = await env.restart(d);
    expect(d2.logs()).toContain('damaged pod record moved aside');
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect((await sh('iptables', ['-w', '5', '-t', 'nat', '-S'])).stdout).not.toContain(`--dport ${hostPort}`);
    expect(d2.logs()).toContain('releasing the pod from the copy in its dir');
    expect(await env.leftovers(d2, net)).toEqual([]);
  });

  it('a client cancelling RunPodSandbox during CNI ADD leaves nothing', async () => {
    const { d, net } = await slowDaemon(800);
    const err = await runtimeCall(d.client, 'RunPodSandbox', { config: env.podConfig() }, 300).catch((e: { code: number }) => e);
    expect(err).toMatchObject({ code: status.DEADLINE_EXCEEDED });
    expect(await waitForLog(d, 'cancelled by the client')).toBe(true);
    expect(await waitForLog(d, 'pod sandbox setup undone')).toBe(true);
    expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await env.leftovers(d, net)).toEqual([]);
    // and a run that is not cancelled still works
    const id = await runPod(d, env.podConfig());
    expect((await podStatus(d, id)).status!.state).toBe('SANDBOX_READY');
  });

  it('kill -9 during CNI ADD: the half-built pod is undone at restart (DEL runs, lease released)', async () => {
    const { d, net } = await slowDaemon(3000);
    const running = runtimeCall(d.client, 'RunPodSandbox', { config: env.podConfig() }).catch(() => undefined);
    const leases = join(net.leaseDir, net.name);
    const deadline = Date.now() + 10_000;
    while (!(await readdir(leases).catch(() => [])).some((n) => n.startsWith('10.89.')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await readdir(leases)).some((n) => n.startsWith('10.89.'))).toBe(true);
    await d.stop('SIGKILL');
    await running;
    const d2 = await env.restart(d);
    expect(d2.logs()).toContain('was being created when the daemon stopped');
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await env.leftovers(d2, net)).toEqual([]);
    await rm(join(d2.dir, 'cni-bin'), { recursive: true, force: true });
  });
});
