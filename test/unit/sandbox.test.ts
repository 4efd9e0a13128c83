// Pure logic of pod sandboxes: the plan made from a PodSandboxConfig, sysctl rules, cgroup paths and
// limits (cgroupfs and systemd slices), pod files, CNI config parsing and results.
import { describe, it, expect } from 'vitest';
import { planPod, parseQuantity } from '../../src/sandbox/plan.js';
import { checkSysctls, applySysctls } from '../../src/sandbox/sysctls.js';
import { podCgroupLimits, sharesToWeight, checkCgroupfsPath, expandSlice, cgroupFsPath } from '../../src/sandbox/cgroups.js';
import { resolvConfText, hostsText } from '../../src/sandbox/files.js';
import { parseNetworkList, podIpsFromResult, pluginTypes } from '../../src/net/cni.js';
import type { PodSandboxConfig__Output } from '../../src/gen/runtime/v1/PodSandboxConfig.js';
import type { SkiffError } from '../../src/errors.js';

const ID = 'ab'.repeat(32);

function config(over: Partial<PodSandboxConfig__Output> = {}, linux: Record<string, unknown> = {}): PodSandboxConfig__Output {
  return {
    metadata: { name: 'p', namespace: 'ns', uid: 'u', attempt: 0 },
    hostname: 'h',
    log_directory: '',
    dns_config: null,
    port_mappings: [],
    labels: {},
    annotations: {},
    linux: { cgroup_parent: '', security_context: null, sysctls: {}, overhead: null, resources: null, ...linux },
    windows: null,
    ...over,
  };
}

/** A security context as the gRPC decoder hands it: every field present. */
function secCtx(over: Record<string, unknown>) {
  return {
    namespace_options: null,
    selinux_options: null,
    run_as_user: null,
    readonly_rootfs: false,
    supplemental_groups: [],
    privileged: false,
    seccomp_profile_path: '',
    run_as_group: null,
    seccomp: null,
    apparmor: null,
    ...over,
  };
}

const kindOf = (fn: () => unknown) => {
  try {
    fn();
    return 'ok';
  } catch (err) {
    return (err as SkiffError).kind;
  }
};

describe('planPod', () => {
  const opts = { cgroupDriver: 'cgroupfs' as const, defaultCgroupParent: '/skiff', podId: ID };
  it('defaults to a pod cgroup of its own under the configured parent (cgroupfs)', () => {
    expect(planPod(config(), opts).cgroupParent).toBe(`/skiff/pod-${ID}`);
    expect(planPod(config({}, { cgroup_parent: '/kubepods/burstable/podX' }), opts).cgroupParent).toBe('/kubepods/burstable/podX');
    expect(kindOf(() => planPod(config({}, { cgroup_parent: 'relative/x' }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(config({}, { cgroup_parent: '/a/../b' }), opts))).toBe('invalid_argument');
  });
  it('with the systemd driver takes slice names only, and defaults to a slice of its own', () => {
    const sd = { ...opts, cgroupDriver: 'systemd' as const };
    expect(planPod(config({}, { cgroup_parent: 'kubepods-burstable-podX.slice' }), sd).cgroupParent).toBe('kubepods-burstable-podX.slice');
    expect(planPod(config(), sd).cgroupParent).toBe(`skiff-pod${ID}.slice`);
    expect(planPod(config(), { ...sd, defaultCgroupParent: 'machine-pods.slice' }).cgroupParent).toBe(`machine-pods-pod${ID}.slice`);
    expect(kindOf(() => planPod(config({}, { cgroup_parent: '/kubepods/podX' }), sd))).toBe('invalid_argument');
    expect(kindOf(() => planPod(config({}, { cgroup_parent: 'a--b.slice' }), sd))).toBe('invalid_argument');
  });
  it('userns POD mappings the kernel would refuse are INVALID_ARGUMENT here, not EINVAL from uid_map later', () => {
    const userns = (uids: { container_id: number; host_id: number; length: number }[]) =>
      config({}, { security_context: secCtx({ namespace_options: { network: 'POD', pid: 'POD', ipc: 'POD', target_id: '', userns_options: { mode: 'POD', uids, gids: [{ container_id: 0, host_id: 100000, length: 65536 }] } } }) });
    const ok = [{ container_id: 0, host_id: 100000, length: 65536 }];
    expect(planPod(userns(ok), opts).uidMappings).toEqual([{ containerId: 0, hostId: 100000, size: 65536 }]);
    const bad = [
      [{ container_id: 0, host_id: 100000, length: 10 }, { container_id: 10, host_id: 100005, length: 10 }], // host ranges overlap
      [{ container_id: 0, host_id: 100000, length: 10 }, { container_id: 5, host_id: 200000, length: 10 }], // container ranges overlap
      [{ container_id: 0, host_id: 4294967000, length: 65536 }], // past 32-bit ids
      Array.from({ length: 341 }, (_, i) => ({ container_id: i, host_id: 100000 + i, length: 1 })),
    ];
    for (const uids of bad) expect(kindOf(() => planPod(userns(uids), opts)), JSON.stringify(uids).slice(0, 80)).toBe('invalid_argument');
  });

  it('host namespaces: no port mappings or bandwidth on the host network; TARGET refused', () => {
    const host = config(
      { port_mappings: [{ protocol: 'TCP', container_port: 80, host_port: 8080, host_ip: '' }], annotations: { 'kubernetes.io/ingress-bandwidth': '1M' } },
      { security_context: secCtx({ namespace_options: { network: 'NODE', pid: 'NODE', ipc: 'NODE', target_id: '', userns_options: null } }) },
    );
    const p = planPod(host, opts);
    expect(p).toMatchObject({ hostNetwork: true, hostPid: true, hostIpc: true, podPid: false, portMappings: [], bandwidth: undefined });
    const target = config({}, { security_context: secCtx({ namespace_options: { network: 'POD', pid: 'TARGET', ipc: 'POD', target_id: 'x', userns_options: null } }) });
    expect(kindOf(() => planPod(target, opts))).toBe('invalid_argument');
  });
  it('port mappings and bandwidth become CNI capability args; bad ones are INVALID_ARGUMENT', () => {
    const p = planPod(
      config({
        port_mappings: [
          { protocol: 'UDP', container_port: 53, host_port: 5353, host_ip: '127.0.0.1' },
          { protocol: 'TCP', container_port: 80, host_port: 0, host_ip: '' },
        ],
        annotations: { 'kubernetes.io/ingress-bandwidth': '10M', 'kubernetes.io/egress-bandwidth': '1Mi' },
      }),
      opts,
    );
    expect(p.portMappings).toEqual([{ hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '127.0.0.1' }]);
    expect(p.bandwidth).toEqual({ ingressRate: 10_000_000, ingressBurst: 2 ** 31 - 1, egressRate: 2 ** 20, egressBurst: 2 ** 31 - 1 });
    expect(kindOf(() => planPod(config({ port_mappings: [{ protocol: 'TCP', container_port: 0, host_port: 80, host_ip: '' }] }), opts))).toBe('invalid_argument');
    expect(kindOf(() => parseQuantity('1.5.5M'))).toBe('invalid_argument');
    expect(parseQuantity('1.5k')).toBe(1500);
  });
  it('checks the sandbox security context: group without user, negative ids, Localhost profiles without a file', () => {
    const sc = (over: Record<string, unknown>) => config({}, { security_context: secCtx(over) });
    expect(kindOf(() => planPod(sc({ run_as_group: { value: '10' } }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ run_as_user: { value: '-1' } }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ run_as_user: { value: '1000' }, run_as_group: { value: '1000' }, privileged: true }), opts))).toBe('ok');
    expect(kindOf(() => planPod(sc({ seccomp: { profile_type: 'Localhost', localhost_ref: '' } }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ seccomp: { profile_type: 'Localhost', localhost_ref: '/etc/seccomp/p.json' } }), opts))).toBe('ok');
    expect(kindOf(() => planPod(sc({ seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } }), opts))).toBe('ok');
    expect(kindOf(() => planPod(sc({ apparmor: { profile_type: 'Localhost', localhost_ref: '' } }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ seccomp_profile_path: 'localhost/' }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ seccomp_profile_path: 'bogus' }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(sc({ seccomp_profile_path: 'runtime/default' }), opts))).toBe('ok');
  });
  it('CNI args carry the pod identity; hostname limits', () => {
    expect(planPod(config(), opts).cniArgs).toEqual({ K8S_POD_NAMESPACE: 'ns', K8S_POD_NAME: 'p', K8S_POD_INFRA_CONTAINER_ID: ID, K8S_POD_UID: 'u' });
    expect(kindOf(() => planPod(config({ hostname: 'x'.repeat(65) }), opts))).toBe('invalid_argument');
    expect(kindOf(() => planPod(config({ metadata: null }), opts))).toBe('invalid_argument');
  });
});

describe('sysctls', () => {
  it('allows namespaced keys in namespaces the pod owns, with either separator', () => {
    expect(checkSysctls({ 'net.ipv4.conf.eth0/100.forwarding': '1' }, { net: true, ipc: true })).toEqual([
      { key: 'net.ipv4.conf.eth0/100.forwarding', value: '1', path: 'net/ipv4/conf/eth0.100/forwarding', ns: 'net' },
    ]);
    expect(checkSysctls({ 'net/ipv4/conf/eth0.100/forwarding': '1' }, { net: true, ipc: true })[0].path).toBe('net/ipv4/conf/eth0.100/forwarding');
    expect(checkSysctls({ 'kernel.msgmax': '1', 'fs.mqueue.msg_max': '2', 'kernel.sem': '1 2 3 4' }, { net: true, ipc: true }).map((s) => s.ns)).toEqual(['ipc', 'ipc', 'ipc']);
  });
  it('refuses anything that would touch the host', () => {
    for (const [key, own] of [
      ['net.ipv4.ip_forward', { net: false, ipc: true }],
      ['kernel.shmmax', { net: true, ipc: false }],
      ['kernel.hostname', { net: true, ipc: true }],
      ['vm.overcommit_memory', { net: true, ipc: true }],
      ['net.ipv4..x', { net: true, ipc: true }],
      ['net/../../x', { net: true, ipc: true }],
    ] as const) {
      expect(kindOf(() => checkSysctls({ [key]: '1' }, own)), key).toBe('invalid_argument');
    }
    expect(kindOf(() => checkSysctls({ 'net.core.somaxconn': '1\n2' }, { net: true, ipc: true }))).toBe('invalid_argument');
  });
  it('applying: a value the kernel refuses is INVALID_ARGUMENT, any other failure keeps its own kind', async () => {
    const kindOfAsync = (p: Promise<unknown>) => p.then(() => 'ok', (e: SkiffError) => e.kind);
    // A key the kernel does not have (the write fails inside the namespace; nothing on the host is changed).
    const unknownKey = checkSysctls({ 'net.ipv4.skpod_no_such_sysctl': '1' }, { net: true, ipc: true });
    expect(await kindOfAsync(applySysctls(unknownKey, { net: '/proc/self/ns/net' }))).toBe('invalid_argument');
    // The namespace cannot be entered: our failure, not the caller's.
    const ok = checkSysctls({ 'net.ipv4.ip_forward': '1' }, { net: true, ipc: true });
    expect(await kindOfAsync(applySysctls(ok, { net: '/nonexistent/skpod-ns/net' }))).toBe('internal');
  });
});

describe('cgroups', () => {
  it('expands systemd slice names into their cgroupfs paths', () => {
    expect(expandSlice('-.slice')).toBe('/');
    expect(expandSlice('system.slice')).toBe('/system.slice');
    expect(expandSlice('kubepods-burstable-pod1_2.slice')).toBe('/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice');
    for (const bad of ['kubepods', '-a.slice', 'a-.slice', 'a--b.slice', 'a/b.slice', '.slice', 'a b.slice']) expect(kindOf(() => expandSlice(bad)), bad).toBe('invalid_argument');
    expect(cgroupFsPath('systemd', 'a-b.slice')).toBe('/a.slice/a-b.slice');
    expect(cgroupFsPath('cgroupfs', '/a/b')).toBe('/a/b');
  });
  it('checks cgroupfs paths', () => {
    expect(checkCgroupfsPath('/a/b/')).toBe('/a/b');
    expect(kindOf(() => checkCgroupfsPath('/a//b'))).toBe('invalid_argument');
  });
  it('caps a pod at resources + overhead; unlimited resources stay unlimited', () => {
    const r = (mem: number, quota: number, period: number, shares: number) => ({
      memory_limit_in_bytes: String(mem),
      cpu_quota: String(quota),
      cpu_period: String(period),
      cpu_shares: String(shares),
    });
    expect(podCgroupLimits(r(100, 50_000, 100_000, 512), r(10, 5_000, 50_000, 2))).toEqual({ memoryBytes: 110, cpuQuota: 60_000, cpuPeriod: 100_000, cpuShares: 514 });
    expect(podCgroupLimits(r(0, 0, 0, 0), r(10, 5_000, 50_000, 2))).toEqual({});
    expect(podCgroupLimits(null, r(10, 1, 1, 1))).toEqual({});
    expect(podCgroupLimits(r(0, -1, 0, 300_000), null)).toEqual({ cpuShares: 262_144 });
    expect(kindOf(() => podCgroupLimits(r(0, 1000, 10, 0), null))).toBe('invalid_argument');
    expect(sharesToWeight(2)).toBe(1);
    expect(sharesToWeight(262_144)).toBe(10_000);
    expect(sharesToWeight(1024)).toBe(39);
  });
});

describe('pod files', () => {
  it('writes resolv.conf from DNSConfig, or nothing to use the host one', () => {
    expect(resolvConfText({ servers: ['1.1.1.1'], searches: ['a.b'], options: ['ndots:2', 'edns0'] })).toBe('search a.b\nnameserver 1.1.1.1\noptions ndots:2 edns0\n');
    expect(resolvConfText({ servers: [], searches: [], options: [] })).toBeUndefined();
    expect(kindOf(() => resolvConfText({ servers: ['1.1.1.1\nnameserver 6.6.6.6'], searches: [], options: [] }))).toBe('invalid_argument');
  });
  it('lists the pod IPs under its hostname, and leaves out a hostname that would break the file', () => {
    expect(hostsText('web', ['10.0.0.2', 'fd00::2'])).toMatch(/\n10\.0\.0\.2\tweb\nfd00::2\tweb\n$/);
    expect(hostsText('a b', ['10.0.0.2'])).not.toContain('10.0.0.2');
  });
});

describe('CNI config and results', () => {
  it('parses conflists and single-plugin confs; refuses bad ones', () => {
    const list = parseNetworkList({ cniVersion: '1.0.0', name: 'n', disableCheck: true, plugins: [{ type: 'bridge', ipam: { type: 'host-local' } }, { type: 'portmap' }] }, 'f');
    expect(list).toMatchObject({ cniVersion: '1.0.0', name: 'n', disableCheck: true });
    expect(pluginTypes(list)).toEqual(['bridge', 'host-local', 'portmap']);
    expect(parseNetworkList({ cniVersion: '0.4.0', name: 'n', type: 'ptp' }, 'f').plugins).toEqual([{ cniVersion: '0.4.0', name: 'n', type: 'ptp' }]);
    for (const bad of [
      { cniVersion: '2.0.0', name: 'n', plugins: [{ type: 'x' }] },
      { cniVersion: '1.0.0', name: 'bad name', plugins: [{ type: 'x' }] },
      { cniVersion: '1.0.0', name: 'n', plugins: [] },
      { cniVersion: '1.0.0', name: 'n', plugins: [{ type: '../x' }] },
      { cniVersion: '1.0.0', name: 'n', disableCheck: 'yes', plugins: [{ type: 'x' }] },
    ]) {
      expect(kindOf(() => parseNetworkList(bad, 'f')), JSON.stringify(bad)).toBe('failed_precondition');
    }
  });
  it('takes pod IPs from the sandbox interfaces only, v4 first', () => {
    const result = {
      interfaces: [{ name: 'br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/ns' }],
      ips: [
        { interface: 0, address: '10.0.0.1/24' },
        { interface: 2, address: 'fd00::5/64' },
        { interface: 2, address: '10.0.0.5/24' },
        { address: '10.0.1.5/24' },
      ],
    };
    expect(podIpsFromResult(result)).toEqual(['10.0.0.5', '10.0.1.5', 'fd00::5']);
    expect(podIpsFromResult(null)).toEqual([]);
  });
});
