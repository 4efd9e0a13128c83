// Issue 4: pod sandboxes with pinned namespaces and real CNI plugins (bridge, host-local, portmap), as root.
import { describe, it, expect } from 'vitest';
import { readdir, readFile, writeFile, mkdir, copyFile, chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startDaemon, removeScratchDir } from '../helpers/daemon.js';
import { makeNetwork, bridgePorts } from '../helpers/cni.js';
import { PodTestEnv, sh, codeOf, runPod as run, podStatus, netnsOf, listenIn, NODE, CONNECT } from '../helpers/pods.js';
import { runtimeCall } from '../../src/cli/client.js';

const env = PodTestEnv.forTestFile();

describe('pod sandboxes on a CNI bridge', () => {
  it('two pods get IPs on the bridge and reach each other; status, list, stop, remove leave nothing', async () => {
    const { d, net } = await env.netDaemon();
    const [a, b] = await Promise.all([run(d, env.podConfig()), run(d, env.podConfig())]);
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
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('survives kill -9: pods, IPs and CNI result unchanged after restart, stop/remove still work', async () => {
    const { d, net } = await env.netDaemon({ cniVersion: '0.4.0' });
    const withInit = env.podConfig();
    withInit.linux!.security_context!.namespace_options!.pid = 'POD';
    const ids = await Promise.all([run(d, env.podConfig()), run(d, env.podConfig()), run(d, withInit)]);
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: ids[1] });
    const before = await Promise.all(ids.map((id) => podStatus(d, id, true)));
    const initPid = (JSON.parse(before[2].info.info) as { pid: number }).pid;
    await d.stop('SIGKILL');
    const d2 = await env.restart(d);
    const after = await Promise.all(ids.map((id) => podStatus(d2, id, true)));
    for (const [i, s] of after.entries()) {
      expect(s.status).toEqual(before[i].status);
      expect(JSON.parse(s.info.info).cniResult).toEqual(JSON.parse(before[i].info.info).cniResult);
    }
    expect(after.map((s) => s.status!.state)).toEqual(['SANDBOX_READY', 'SANDBOX_NOTREADY', 'SANDBOX_READY']);
    // the pod init outlived the daemon and is still the pod's; stop ends it
    expect(await readFile(`/proc/${initPid}/comm`, 'utf8')).toBe('catatonit\n');
    await runtimeCall(d2.client, 'StopPodSandbox', { pod_sandbox_id: ids[2] });
    expect(await readFile(`/proc/${initPid}/comm`, 'utf8').catch(() => 'gone')).not.toBe('catatonit\n');
    for (const id of ids) await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await env.leftovers(d2, net)).toEqual([]);
  });

  it('after a reboot (pod dirs and pins gone) pods come back NOTREADY, their network released, and go away cleanly', async () => {
    const { d, net } = await env.netDaemon();
    const withInit = env.podConfig();
    withInit.linux!.security_context!.namespace_options!.pid = 'POD';
    const ids = await Promise.all([run(d, env.podConfig()), run(d, withInit)]);
    const ips = await Promise.all(ids.map(async (id) => (await podStatus(d, id)).status!.network!.ip));
    const initPid = (JSON.parse((await podStatus(d, ids[1], true)).info.info) as { pid: number }).pid;
    await d.stop('SIGKILL');
    // what a reboot does to the state dir (tmpfs) and to processes; the root dir with records stays
    process.kill(initPid, 'SIGKILL');
    await removeScratchDir(d.state);
    expect((await readdir(join(net.leaseDir, net.name))).filter((n) => n.startsWith('10.89.'))).toHaveLength(2);
    const d2 = await env.restart(d);
    const after = await Promise.all(ids.map((id) => podStatus(d2, id)));
    expect(after.map((s) => s.status!.state)).toEqual(['SANDBOX_NOTREADY', 'SANDBOX_NOTREADY']);
    // status still tells which IPs the pods had
    expect(after.map((s) => s.status!.network!.ip)).toEqual(ips);
    expect(d2.logs()).toContain('pod namespaces are gone; marking it NOTREADY');
    // CNI DEL ran at start-up (no netns any more): the leases are free again
    expect((await readdir(join(net.leaseDir, net.name))).filter((n) => n.startsWith('10.89.'))).toEqual([]);
    for (const id of ids) {
      await runtimeCall(d2.client, 'StopPodSandbox', { pod_sandbox_id: id });
      await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    }
    expect(await env.leftovers(d2, net)).toEqual([]);
  });
});

describe('pod sandboxes: host namespaces, sysctls, names, handlers', () => {
  it('a hostNetwork pod has no netns, no CNI call, an empty network status, and echoes its namespace options', async () => {
    // no CNI config at all: only hostNetwork pods may run
    const dir = await env.scratchDir();
    const d = await startDaemon({ dir, config: env.daemonConfig(join(dir, 'none')) });
    env.daemons.push(d);
    const refused = await runtimeCall(d.client, 'RunPodSandbox', { config: env.podConfig() }).catch((e: { code: number; details: string }) => e);
    expect(refused).toMatchObject({ code: status.FAILED_PRECONDITION });
    expect((refused as { details: string }).details).toContain('only hostNetwork pods');
    const asked = { network: 'NODE', pid: 'NODE', ipc: 'NODE', target_id: '', userns_options: null } as const;
    const cfg = env.podConfig({}, true);
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
    const { d, net } = await env.netDaemon();
    const hostRange = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
    const cfg = env.podConfig();
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
      // namespaced by name, but the kernel has no such key: fails when applied, after the pod was half made
      [{ 'net.ipv4.skpod_no_such_key': '1' }, false],
    ];
    for (const [sysctls, hostNamespaces] of bad) {
      const c = env.podConfig({}, hostNamespaces);
      if (hostNamespaces) c.linux!.security_context!.namespace_options!.ipc = 'NODE';
      c.linux!.sysctls = sysctls;
      expect(await codeOf(run(d, c)), JSON.stringify(sysctls)).toBe(status.INVALID_ARGUMENT);
    }
    expect(await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).toBe('1\n');
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('takes any UTF-8 name (CJK, emoji), refuses a duplicate name and an unknown runtime handler', async () => {
    const { d, net } = await env.netDaemon();
    const names = ['ポッド-テスト', '🚀🐳-pod', 'a;b=c d'];
    const ids: string[] = [];
    for (const name of names) {
      ids.push(await run(d, env.podConfig({ metadata: { name, namespace: '名前空間', uid: name, attempt: 0 } })));
    }
    for (const [i, id] of ids.entries()) {
      expect(id).toMatch(/^[0-9a-f]{64}$/);
      expect((await podStatus(d, id)).status!.metadata!.name).toBe(names[i]);
    }
    const dup = env.podConfig({ metadata: { name: names[0], namespace: '名前空間', uid: names[0], attempt: 0 } });
    expect(await codeOf(run(d, dup))).toBe(status.ALREADY_EXISTS);
    const unknown = await run(d, env.podConfig(), 'no-such-handler').catch((e: { code: number; details: string }) => e);
    expect(unknown).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect((unknown as { details: string }).details).toContain('no-such-handler');
    expect((await podStatus(d, await run(d, env.podConfig(), 'crun'))).status!.runtime_handler).toBe('crun');
    for (const p of (await runtimeCall(d.client, 'ListPodSandbox', {})).items) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('holds a pod-shared PID namespace with catatonit, killed on stop', async () => {
    const { d, net } = await env.netDaemon();
    const cfg = env.podConfig();
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
    expect(await env.leftovers(d, net)).toEqual([]);
    // an init that dies on its own takes the pod with it (its PID namespace is gone): NOTREADY
    const id2 = await run(d, cfg);
    const pid2 = (JSON.parse((await podStatus(d, id2, true)).info.info) as { pid: number }).pid;
    process.kill(pid2, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect((await podStatus(d, id2)).status!.state).toBe('SANDBOX_NOTREADY');
    expect((await runtimeCall(d.client, 'ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } })).items).toEqual([]);
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id2 });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id2 });
    expect(await env.leftovers(d, net)).toEqual([]);
  });
});

describe('pod sandboxes: teardown never leaks', () => {
  it('failed runs (missing plugin after bridge, bad conflist) leave no netns, veth, lease, mount or cgroup', async () => {
    const dir = await env.scratchDir();
    const net = await makeNetwork(dir, { extraPlugins: [{ type: 'skpod-no-such-plugin' }] });
    env.networks.push(net);
    const d = await startDaemon({ dir, config: env.daemonConfig(net.confDir) });
    env.daemons.push(d);
    const failed = await run(d, env.podConfig()).catch((e: { code: number; details: string }) => e);
    expect(failed).toMatchObject({ code: status.FAILED_PRECONDITION });
    expect((failed as { details: string }).details).toContain('skpod-no-such-plugin');
    expect(await env.leftovers(d, net)).toEqual([]);
    // a conflist that is not JSON
    await writeFile(join(net.confDir, '10-skpod.conflist'), '{ "cniVersion": "1.0.0", "name": ');
    expect(await codeOf(run(d, env.podConfig()))).toBe(status.FAILED_PRECONDITION);
    expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('a pod whose conflist and plugins vanished after it ran can still be stopped and removed', async () => {
    const dir = await env.scratchDir();
    // private copies of the plugins, so one can be deleted without touching the machine's
    const bin = join(dir, 'cni-bin');
    await mkdir(bin);
    for (const p of ['bridge', 'host-local', 'portmap', 'tuning']) await copyFile(join('/usr/lib/cni', p), join(bin, p)).then(() => chmod(join(bin, p), 0o755));
    const net = await makeNetwork(dir, { portmap: true, extraPlugins: [{ type: 'tuning' }] });
    env.networks.push(net);
    const d = await startDaemon({ dir, config: env.daemonConfig(net.confDir).replace('[cni]\n', `[cni]\nbin_dir = "${bin}"\n`) });
    env.daemons.push(d);
    const hostPort = 30000 + Math.floor(Math.random() * 20000);
    const [a, b] = await Promise.all(
      [0, 1].map((i) => run(d, env.podConfig({ port_mappings: [{ protocol: 'TCP', container_port: 80, host_port: hostPort + i, host_ip: '' }] }))),
    );
    // the conflist is gone: DEL uses the list ADD ran with, so the lease and the port mapping go too
    await rm(net.confDir, { recursive: true });
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: a });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: a });
    expect((await sh('iptables', ['-w', '5', '-t', 'nat', '-S'])).stdout).not.toContain(`--dport ${hostPort} `);
    // a plugin binary is gone too (tuning: nothing of its own to release): its DEL is skipped, the others run
    await rm(join(bin, 'tuning'));
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: b });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: b });
    expect((await sh('iptables', ['-w', '5', '-t', 'nat', '-S'])).stdout).not.toContain(`--dport ${hostPort + 1} `);
    expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items).toEqual([]);
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('ten concurrent Stop/Remove calls on one pod all succeed; many pods stop and go without a trace', async () => {
    const { d, net } = await env.netDaemon();
    const ids = await Promise.all(Array.from({ length: 10 }, () => run(d, env.podConfig())));
    const calls = Array.from({ length: 10 }, (_, i) =>
      runtimeCall(d.client, i % 2 ? 'RemovePodSandbox' : 'StopPodSandbox', { pod_sandbox_id: ids[0] }),
    );
    await Promise.all(calls);
    await Promise.all(ids.slice(1).map((id) => runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id })));
    await Promise.all(ids.map((id) => runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id })));
    // again: already gone is fine
    await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: ids[0] });
    await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: ids[0] });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('a cancelled RunPodSandbox leaves either a whole pod or nothing', async () => {
    const { d, net } = await env.netDaemon();
    for (const ms of [5, 30, 80]) {
      await runtimeCall(d.client, 'RunPodSandbox', { config: env.podConfig() }, ms).catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const pods = (await runtimeCall(d.client, 'ListPodSandbox', {})).items;
    for (const p of pods) expect(p.state).toBe('SANDBOX_READY');
    for (const p of pods) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id });
    expect(await env.leftovers(d, net)).toEqual([]);
  });

  it('a damaged or half-built record found at start-up is logged and cleaned, never fatal', async () => {
    const { d, net } = await env.netDaemon();
    const good = await run(d, env.podConfig());
    await writeFile(join(d.root, 'pods', `${'ab'.repeat(32)}.json`), '{"id": "abab');
    await d.stop('SIGKILL');
    const d2 = await env.restart(d);
    expect(d2.logs()).toContain('damaged pod record moved aside');
    expect((await runtimeCall(d2.client, 'ListPodSandbox', {})).items.map((p) => p.id)).toEqual([good]);
    await runtimeCall(d2.client, 'RemovePodSandbox', { pod_sandbox_id: good });
    expect(await env.leftovers(d2, net)).toEqual([]);
  });
});

describe('pod sandboxes: port mappings', () => {
  it('a hostPort mapping reaches a listener inside the pod over loopback (portmap)', async () => {
    const { d, net } = await env.netDaemon({ portmap: true });
    const hostPort = 30000 + Math.floor(Math.random() * 20000);
    const id = await run(d, env.podConfig({ port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort, host_ip: '' }] }));
    const stopListener = await listenIn(await netnsOf(d, id), 8080);
    // DNAT of 127.0.0.1 to the pod only routes with route_localnet on the bridge: portmap (snat on) sets it
    expect(await readFile(`/proc/sys/net/ipv4/conf/${net.bridge}/route_localnet`, 'utf8')).toBe('1\n');
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
    expect(await env.leftovers(d, net)).toEqual([]);
  });
});
