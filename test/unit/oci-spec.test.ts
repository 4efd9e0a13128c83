// The OCI spec steps, each alone, and their composition (src/oci/spec). Pure functions: no disk, no runc.
import { describe, it, expect } from 'vitest';
import type { ContainerConfig__Output } from '../../src/gen/runtime/v1/ContainerConfig.js';
import type { LinuxContainerSecurityContext__Output } from '../../src/gen/runtime/v1/LinuxContainerSecurityContext.js';
import type { LinuxContainerResources__Output } from '../../src/gen/runtime/v1/LinuxContainerResources.js';
import type { SpecInput } from '../../src/oci/spec/input.js';
import { buildSpec, emptySpec, SPEC_STEPS } from '../../src/oci/spec/build.js';
import { commandLine, mergeEnv, withProcess, withUser } from '../../src/oci/spec/process.js';
import { parseGroup, parsePasswd, resolveUser } from '../../src/oci/spec/user.js';
import { defaultMounts, withPodFiles, withRequestMounts, withRootfs } from '../../src/oci/spec/mounts.js';
import { clampOomScoreAdj, ociResources, withCgroupsPath, withDevices, withHostname, withNamespaces, withResources } from '../../src/oci/spec/linux.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, effectiveCapabilities, normalizeCapability, withSecurity } from '../../src/oci/spec/security.js';
import { runtimeDefaultSeccomp, seccompChoice } from '../../src/oci/spec/seccomp.js';
import { deviceNumbers } from '../../src/oci/spec/resolve.js';
import { SkiffError } from '../../src/errors.js';

function sc(over: Partial<LinuxContainerSecurityContext__Output> = {}): LinuxContainerSecurityContext__Output {
  return {
    capabilities: null, privileged: false, namespace_options: null, selinux_options: null, run_as_user: null, run_as_username: '',
    readonly_rootfs: false, supplemental_groups: [], apparmor_profile: '', seccomp_profile_path: '', no_new_privs: false, run_as_group: null,
    masked_paths: [], readonly_paths: [], seccomp: null, apparmor: null, ...over,
  };
}

function res(over: Partial<LinuxContainerResources__Output> = {}): LinuxContainerResources__Output {
  return {
    cpu_period: '0', cpu_quota: '0', cpu_shares: '0', memory_limit_in_bytes: '0', oom_score_adj: '0', cpuset_cpus: '', cpuset_mems: '',
    hugepage_limits: [], unified: {}, memory_swap_limit_in_bytes: '0', ...over,
  };
}

function cfg(over: Partial<ContainerConfig__Output> = {}, security: Partial<LinuxContainerSecurityContext__Output> = {}, resources?: Partial<LinuxContainerResources__Output>): ContainerConfig__Output {
  return {
    metadata: { name: 'c', attempt: 0 }, image: { image: 'busybox', annotations: {}, user_specified_image: 'busybox', runtime_handler: '' },
    command: [], args: [], working_dir: '', envs: [], mounts: [], devices: [], labels: {}, annotations: {}, log_path: '', stdin: false,
    stdin_once: false, tty: false, linux: { resources: resources ? res(resources) : null, security_context: sc(security) }, windows: null, CDI_devices: [],
    ...over,
  };
}

function input(over: Partial<SpecInput> = {}): SpecInput {
  return {
    containerId: 'c1',
    config: cfg(),
    image: { Entrypoint: ['/entry'], Cmd: ['default'], Env: ['PATH=/bin', 'A=image'] },
    pod: {
      id: 'p1',
      namespaces: { net: '/run/ns/net', ipc: '/run/ns/ipc', uts: '/run/ns/uts' },
      cgroupParent: '/skiff/p1',
      files: { hostname: '/pod/hostname', hosts: '/pod/hosts', resolvConf: '/pod/resolv.conf', shm: '/pod/shm' },
      config: { hostname: 'podhost', linux: null },
    },
    rootfs: '/rootfs/c1',
    user: { uid: 0, gid: 0, additionalGids: [] },
    devices: [],
    apparmorEnabled: false,
    cgroupDriver: 'cgroupfs',
    ...over,
  };
}

const kindOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return err instanceof SkiffError ? err.kind : 'other';
  }
  return undefined;
};

describe('process', () => {
  it("follows kubelet's command/args rules", () => {
    const image = { Entrypoint: ['/entry'], Cmd: ['default'] };
    expect(commandLine({ config: cfg(), image })).toEqual(['/entry', 'default']);
    expect(commandLine({ config: cfg({ args: ['a'] }), image })).toEqual(['/entry', 'a']);
    expect(commandLine({ config: cfg({ command: ['/cmd'] }), image })).toEqual(['/cmd']);
    expect(commandLine({ config: cfg({ command: ['/cmd'], args: ['x'] }), image })).toEqual(['/cmd', 'x']);
    expect(commandLine({ config: cfg(), image: { Cmd: ['sh'] } })).toEqual(['sh']);
    expect(kindOf(() => commandLine({ config: cfg(), image: {} }))).toBe('invalid_argument');
  });

  it('merges env: image, then the request by name, then PATH/HOME/HOSTNAME defaults', () => {
    const env = mergeEnv({ config: cfg({ envs: [{ key: 'A', value: 'req' }, { key: 'B', value: 'x=y' }] }), image: { Env: ['A=image', 'C', 'PATH=/bin'] }, user: { uid: 0, gid: 0, additionalGids: [], home: '/root' } }, 'h');
    expect(env).toEqual(['A=req', 'C=', 'PATH=/bin', 'B=x=y', 'HOME=/root', 'HOSTNAME=h']);
    expect(mergeEnv({ config: cfg(), image: {}, user: { uid: 0, gid: 0, additionalGids: [] } }, undefined)).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'HOME=/',
    ]);
  });

  it('working dir from the request, else the image, else /; relative is refused; no rlimits of our own', () => {
    expect(withProcess(emptySpec(), input()).process.cwd).toBe('/');
    expect(withProcess(emptySpec(), input({ image: { Cmd: ['x'], WorkingDir: '/img' } })).process.cwd).toBe('/img');
    expect(withProcess(emptySpec(), input({ config: cfg({ working_dir: '/req' }), image: { Cmd: ['x'], WorkingDir: '/img' } })).process.cwd).toBe('/req');
    expect(kindOf(() => withProcess(emptySpec(), input({ config: cfg({ working_dir: 'rel' }) })))).toBe('invalid_argument');
    expect(withProcess(emptySpec(), input()).process.rlimits).toBeUndefined();
  });

  it('sets the user with supplemental groups other than the primary', () => {
    const s = withUser(emptySpec(), input({ user: { uid: 5, gid: 6, additionalGids: [6, 7, 8] } }));
    expect(s.process.user).toEqual({ uid: 5, gid: 6, additionalGids: [7, 8] });
    expect(withUser(emptySpec(), input({ user: { uid: 5, gid: 6, additionalGids: [] } })).process.user.additionalGids).toBeUndefined();
  });
});

describe('user resolution', () => {
  const passwd = parsePasswd('root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nbad line\n');
  const groups = parseGroup('root:x:0:\napp:x:1001:\nwheel:x:10:app,other\ndocker:x:999:app\n');

  it('parses passwd and group files, skipping junk', () => {
    expect(passwd.map((p) => p.name)).toEqual(['root', 'app']);
    expect(groups.find((g) => g.name === 'wheel')?.members).toEqual(['app', 'other']);
  });

  it('takes run_as_user, else run_as_username, else the image USER', () => {
    expect(resolveUser(sc({ run_as_user: { value: '1000' } }), 'root', passwd, groups)).toMatchObject({ uid: 1000, gid: 1001, home: '/home/app' });
    expect(resolveUser(sc({ run_as_username: 'app' }), undefined, passwd, groups)).toMatchObject({ uid: 1000, gid: 1001 });
    expect(resolveUser(sc(), 'app', passwd, groups)).toMatchObject({ uid: 1000, gid: 1001, additionalGids: [10, 999] });
    expect(resolveUser(sc(), undefined, passwd, groups)).toMatchObject({ uid: 0, gid: 0 });
    // a uid unknown to passwd: gid 0, no home
    expect(resolveUser(sc({ run_as_user: { value: '4242' } }), undefined, passwd, groups)).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: undefined });
  });

  it('handles "user:group" in the image, run_as_group and supplemental groups', () => {
    expect(resolveUser(sc(), 'app:wheel', passwd, groups)).toMatchObject({ uid: 1000, gid: 10 });
    expect(resolveUser(sc(), '7:8', passwd, groups)).toMatchObject({ uid: 7, gid: 8 });
    expect(resolveUser(sc({ run_as_group: { value: '77' }, supplemental_groups: ['5', '10'] }), 'app', passwd, groups)).toMatchObject({ gid: 77, additionalGids: [10, 999, 5] });
  });

  it('an unknown user or group name is INVALID_ARGUMENT', () => {
    expect(kindOf(() => resolveUser(sc({ run_as_username: 'ghost' }), undefined, passwd, groups))).toBe('invalid_argument');
    expect(kindOf(() => resolveUser(sc(), 'app:ghosts', passwd, groups))).toBe('invalid_argument');
  });
});

describe('mounts', () => {
  it('the defaults cover proc, dev, pts, mqueue, sys, cgroup', () => {
    expect(defaultMounts().map((m) => m.destination)).toEqual(['/proc', '/dev', '/dev/pts', '/dev/mqueue', '/sys', '/sys/fs/cgroup']);
  });

  it('binds the pod files (read-only with a read-only rootfs) and the pod shm', () => {
    const s = withPodFiles(emptySpec(), input());
    const by = Object.fromEntries(s.mounts.map((m) => [m.destination, m]));
    expect(by['/etc/hosts']).toEqual({ destination: '/etc/hosts', type: 'bind', source: '/pod/hosts', options: ['rbind', 'rprivate', 'rw'] });
    expect(by['/dev/shm'].source).toBe('/pod/shm');
    const ro = withPodFiles(emptySpec(), input({ config: cfg({}, { readonly_rootfs: true }) }));
    expect(ro.mounts.find((m) => m.destination === '/etc/resolv.conf')?.options).toContain('ro');
    expect(ro.mounts.find((m) => m.destination === '/dev/shm')?.options).toContain('rw');
    const noShm = withPodFiles(emptySpec(), input({ pod: { ...input().pod, files: {} } }));
    expect(noShm.mounts.find((m) => m.destination === '/dev/shm')?.type).toBe('tmpfs');
  });

  it('request mounts: read-only, propagation, replacing a default, rootfs propagation follows', () => {
    const config = cfg({
      mounts: [
        { container_path: '/data', host_path: '/h/data', readonly: true, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uidMappings: [], gidMappings: [] },
        { container_path: '/slave', host_path: '/h/s', readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_HOST_TO_CONTAINER', uidMappings: [], gidMappings: [] },
        { container_path: '/dev/shm', host_path: '/h/shm', readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uidMappings: [], gidMappings: [] },
      ],
    });
    const s = withRequestMounts(withPodFiles(emptySpec(), input({ config })), input({ config }));
    expect(s.mounts.find((m) => m.destination === '/data')?.options).toEqual(['rbind', 'rprivate', 'ro']);
    expect(s.mounts.find((m) => m.destination === '/slave')?.options).toEqual(['rbind', 'rslave', 'rw']);
    expect(s.mounts.filter((m) => m.destination === '/dev/shm').map((m) => m.source)).toEqual(['/h/shm']);
    expect(s.linux.rootfsPropagation).toBe('rslave');
    const shared = cfg({ mounts: [{ container_path: '/b', host_path: '/h/b', readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_BIDIRECTIONAL', uidMappings: [], gidMappings: [] }] });
    expect(withRequestMounts(emptySpec(), input({ config: shared })).linux.rootfsPropagation).toBe('rshared');
  });

  it('relative paths are INVALID_ARGUMENT', () => {
    const rel = (container_path: string, host_path: string) =>
      cfg({ mounts: [{ container_path, host_path, readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uidMappings: [], gidMappings: [] }] });
    expect(kindOf(() => withRequestMounts(emptySpec(), input({ config: rel('data', '/h') })))).toBe('invalid_argument');
    expect(kindOf(() => withRequestMounts(emptySpec(), input({ config: rel('/data', 'h') })))).toBe('invalid_argument');
  });

  it('root is the rootfs, read-only when asked', () => {
    expect(withRootfs(emptySpec(), input()).root).toEqual({ path: '/rootfs/c1', readonly: false });
    expect(withRootfs(emptySpec(), input({ config: cfg({}, { readonly_rootfs: true }) })).root.readonly).toBe(true);
  });
});

describe('linux', () => {
  it("joins the pod's namespaces; pid per namespace_options", () => {
    const types = (i: SpecInput) => withNamespaces(emptySpec(), i).linux.namespaces;
    expect(types(input())).toEqual([
      { type: 'mount' }, { type: 'network', path: '/run/ns/net' }, { type: 'ipc', path: '/run/ns/ipc' }, { type: 'uts', path: '/run/ns/uts' }, { type: 'pid' }, { type: 'cgroup' },
    ]);
    const nsOpt = (pid: string) => input({ config: cfg({}, { namespace_options: { network: 'POD', pid, ipc: 'POD', target_id: '', userns_options: null } as never }) });
    expect(types(nsOpt('NODE')).some((n) => n.type === 'pid')).toBe(false);
    expect(kindOf(() => types(nsOpt('POD')))).toBe('invalid_argument');
    const podPid = nsOpt('POD');
    podPid.pod = { ...podPid.pod, namespaces: { ...podPid.pod.namespaces, pid: '/proc/9/ns/pid' } };
    expect(types(podPid)).toContainEqual({ type: 'pid', path: '/proc/9/ns/pid' });
    // host network pod: no network entry
    expect(types(input({ pod: { ...input().pod, namespaces: {} } })).map((n) => n.type)).toEqual(['mount', 'pid', 'cgroup']);
  });

  it('user namespace pods get their mappings', () => {
    const i = input();
    i.pod = { ...i.pod, namespaces: { ...i.pod.namespaces, user: '/run/ns/user' }, uidMappings: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMappings: [{ containerId: 0, hostId: 100000, size: 65536 }] };
    const s = withNamespaces(emptySpec(), i);
    expect(s.linux.namespaces).toContainEqual({ type: 'user', path: '/run/ns/user' });
    expect(s.linux.uidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
  });

  it('hostname only with a UTS namespace of the pod', () => {
    const withName = withHostname(emptySpec(), input());
    expect(withName.hostname).toBe('podhost');
    expect(withNamespaces(withName, input()).hostname).toBe('podhost');
    expect(withNamespaces(withName, input({ pod: { ...input().pod, namespaces: {} } })).hostname).toBeUndefined();
  });

  it('devices: nodes plus allow rules after deny-all; privileged allows all', () => {
    const devices = [{ type: 'c' as const, path: '/dev/fuse', major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0, permissions: 'rw' }];
    const s = withDevices(emptySpec(), input({ devices }));
    expect(s.linux.devices).toEqual([{ type: 'c', path: '/dev/fuse', major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 }]);
    expect(s.linux.resources?.devices).toEqual([{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 10, minor: 229, access: 'rw' }]);
    expect(withDevices(emptySpec(), input({ config: cfg({}, { privileged: true }) })).linux.resources?.devices).toEqual([{ allow: true, access: 'rwm' }]);
  });

  it('decodes 64-bit dev_t numbers', () => {
    expect(deviceNumbers(0x0a0e5)).toEqual({ major: 0x0a0, minor: 0xe5 }); // small: major 160, minor 229
    expect(deviceNumbers(259 * 256 + 3)).toEqual({ major: 259, minor: 3 });
    // major 4096 and minor 256 only fit the extended bits
    const rdev = Number((4096n & 0xfffn) << 8n | ((4096n >> 12n) << 44n) | (256n & 0xffn) | ((256n >> 8n) << 20n));
    expect(deviceNumbers(rdev)).toEqual({ major: 4096, minor: 256 });
  });

  it('cgroups path per driver', () => {
    expect(withCgroupsPath(emptySpec(), input()).linux.cgroupsPath).toBe('/skiff/p1/c1');
    expect(withCgroupsPath(emptySpec(), input({ cgroupDriver: 'systemd', pod: { ...input().pod, cgroupParent: 'skiff-p1.slice' } })).linux.cgroupsPath).toBe('skiff-p1.slice:skiff:c1');
  });

  it('resources: only what is set, as OCI numbers', () => {
    expect(ociResources(null)).toEqual({});
    expect(ociResources(res())).toEqual({});
    expect(ociResources(res({ cpu_shares: '512', cpu_quota: '50000', cpu_period: '100000', cpuset_cpus: '0', memory_limit_in_bytes: '67108864', memory_swap_limit_in_bytes: '134217728', hugepage_limits: [{ page_size: '2MB', limit: '4194304' }], unified: { 'memory.high': '1' } }))).toEqual({
      cpu: { shares: 512, quota: 50000, period: 100000, cpus: '0' },
      memory: { limit: 67108864, swap: 134217728 },
      hugepageLimits: [{ pageSize: '2MB', limit: 4194304 }],
      unified: { 'memory.high': '1' },
    });
  });

  it('oom_score_adj is clamped to [own, 1000] (restrict_oom_score_adj)', () => {
    expect(clampOomScoreAdj(-999, 0)).toBe(0);
    expect(clampOomScoreAdj(-999, undefined)).toBe(-999);
    expect(clampOomScoreAdj(5000, -100)).toBe(1000);
    expect(clampOomScoreAdj(500, 200)).toBe(500);
    const s = withResources(emptySpec(), input({ config: cfg({}, {}, { oom_score_adj: '-998' }), minOomScoreAdj: -500 }));
    expect(s.process.oomScoreAdj).toBe(-500);
  });
});

describe('security', () => {
  it('normalizes capability names; unknown ones are INVALID_ARGUMENT', () => {
    expect(normalizeCapability('net_admin')).toBe('CAP_NET_ADMIN');
    expect(normalizeCapability('CAP_SYS_ADMIN')).toBe('CAP_SYS_ADMIN');
    expect(normalizeCapability('all')).toBe('CAP_ALL');
    expect(kindOf(() => normalizeCapability('FLY'))).toBe('invalid_argument');
  });

  it('default set, add, drop, ALL, privileged', () => {
    expect(effectiveCapabilities([], [], false).sort()).toEqual([...DEFAULT_CAPABILITIES].sort());
    expect(effectiveCapabilities(['NET_ADMIN'], ['CHOWN'], false)).toContain('CAP_NET_ADMIN');
    expect(effectiveCapabilities(['NET_ADMIN'], ['CHOWN'], false)).not.toContain('CAP_CHOWN');
    expect(effectiveCapabilities([], ['ALL'], false)).toEqual([]);
    expect(effectiveCapabilities(['KILL'], ['ALL'], false)).toEqual(['CAP_KILL']);
    expect(effectiveCapabilities(['ALL'], ['SYS_ADMIN'], false)).toEqual(ALL_CAPABILITIES.filter((c) => c !== 'CAP_SYS_ADMIN'));
    expect(effectiveCapabilities([], ['ALL'], true)).toEqual(ALL_CAPABILITIES);
  });

  it('a non-root user gets no effective capabilities unless ambient ones are asked for', () => {
    const root = withSecurity(emptySpec(), input());
    expect(root.process.capabilities?.effective.sort()).toEqual([...DEFAULT_CAPABILITIES].sort());
    const user = withSecurity(emptySpec(), input({ user: { uid: 1000, gid: 1000, additionalGids: [] } }));
    expect(user.process.capabilities?.effective).toEqual([]);
    expect(user.process.capabilities?.bounding.length).toBe(DEFAULT_CAPABILITIES.length);
    const amb = withSecurity(emptySpec(), input({ user: { uid: 1000, gid: 1000, additionalGids: [] }, config: cfg({}, { capabilities: { add_capabilities: ['NET_BIND_SERVICE'], drop_capabilities: [], add_ambient_capabilities: ['NET_BIND_SERVICE'] } }) }));
    expect(amb.process.capabilities?.ambient).toEqual(['CAP_NET_BIND_SERVICE']);
    expect(amb.process.capabilities?.effective).toEqual(['CAP_NET_BIND_SERVICE']);
  });

  it('masked/read-only paths by default, the request’s when given, none when privileged; no_new_privs', () => {
    const s = withSecurity(emptySpec(), input({ config: cfg({}, { no_new_privs: true }) }));
    expect(s.linux.maskedPaths).toEqual(DEFAULT_MASKED_PATHS);
    expect(s.process.noNewPrivileges).toBe(true);
    expect(withSecurity(emptySpec(), input({ config: cfg({}, { masked_paths: ['/x'], readonly_paths: ['/y'] }) })).linux).toMatchObject({ maskedPaths: ['/x'], readonlyPaths: ['/y'] });
    const p = withSecurity(emptySpec(), input({ config: cfg({}, { privileged: true }), seccomp: 'runtime-default' }));
    expect(p.linux.maskedPaths).toBeUndefined();
    expect(p.linux.seccomp).toBeUndefined();
    expect(p.mounts.find((m) => m.destination === '/sys')?.options).not.toContain('ro');
  });

  it('seccomp: the 1.29 field first, the legacy path as fallback, privileged unconfined', () => {
    expect(seccompChoice(sc({ seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } as never }))).toEqual({ kind: 'runtime-default' });
    expect(seccompChoice(sc({ seccomp: { profile_type: 'Localhost', localhost_ref: '/p.json' } as never }))).toEqual({ kind: 'localhost', path: '/p.json' });
    expect(seccompChoice(sc({ seccomp: { profile_type: 'Unconfined', localhost_ref: '' } as never, seccomp_profile_path: 'runtime/default' }))).toEqual({ kind: 'unconfined' });
    expect(seccompChoice(sc({ seccomp_profile_path: 'runtime/default' }))).toEqual({ kind: 'runtime-default' });
    expect(seccompChoice(sc({ seccomp_profile_path: 'localhost//x.json' }))).toEqual({ kind: 'localhost', path: '/x.json' });
    expect(seccompChoice(sc({ privileged: true, seccomp_profile_path: 'runtime/default' }))).toEqual({ kind: 'unconfined' });
    expect(runtimeDefaultSeccomp([]).syscalls?.[0].names).toContain('kexec_load');
  });

  it('RuntimeDefault: io_uring denied, clone3 ENOSYS, clone with namespace flags denied by argument, cap-gated calls follow the caps', () => {
    const denied = (p: ReturnType<typeof runtimeDefaultSeccomp>, name: string) => p.syscalls!.filter((r) => r.names.includes(name) && r.action === 'SCMP_ACT_ERRNO');
    const plain = runtimeDefaultSeccomp(DEFAULT_CAPABILITIES);
    for (const n of ['io_uring_setup', 'io_uring_enter', 'io_uring_register', 'ptrace', 'process_vm_readv', 'mount', 'unshare', 'setns', 'keyctl', 'bpf']) {
      expect(denied(plain, n).length, n).toBeGreaterThan(0);
    }
    expect(denied(plain, 'clone3')).toEqual([expect.objectContaining({ errnoRet: 38 })]);
    const clone = denied(plain, 'clone');
    const CLONE_NEWUSER = 0x10000000;
    // each rule matches (flags & F) == F for one namespace flag F; together they cover every namespace
    for (const r of clone) expect(r.args).toEqual([{ index: 0, value: r.args![0].value, valueTwo: r.args![0].value, op: 'SCMP_CMP_MASKED_EQ' }]);
    expect(clone.map((r) => r.args![0].value)).toContain(CLONE_NEWUSER);
    expect(clone.reduce((m, r) => m | r.args![0].value, 0) >>> 0).toBe(0x7e020000);
    // plain fork/thread clones carry none of those flags: allowed by the default action
    expect(clone.some((r) => ((0x003d0f00 & r.args![0].value) >>> 0) === r.args![0].value)).toBe(false);

    const ptrace = runtimeDefaultSeccomp([...DEFAULT_CAPABILITIES, 'CAP_SYS_PTRACE']);
    for (const n of ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp']) expect(denied(ptrace, n), n).toEqual([]);
    expect(denied(ptrace, 'mount').length).toBeGreaterThan(0);
    const admin = runtimeDefaultSeccomp([...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN']);
    for (const n of ['clone', 'clone3', 'unshare', 'setns', 'mount', 'umount2', 'pivot_root']) expect(denied(admin, n), n).toEqual([]);
    expect(denied(admin, 'ptrace').length).toBeGreaterThan(0);
    expect(denied(admin, 'io_uring_setup').length).toBeGreaterThan(0);
    // no rule names a syscall twice unconditionally
    for (const p of [plain, ptrace, admin]) {
      const unconditional = p.syscalls!.filter((r) => !r.args).flatMap((r) => r.names);
      expect(new Set(unconditional).size).toBe(unconditional.length);
    }
  });

  it('withSecurity builds RuntimeDefault from the effective capabilities', () => {
    const plain = withSecurity(emptySpec(), input({ seccomp: 'runtime-default' }));
    expect(plain.linux.seccomp?.syscalls?.some((r) => r.names.includes('ptrace'))).toBe(true);
    const ptr = withSecurity(emptySpec(), input({ seccomp: 'runtime-default', config: cfg({}, { capabilities: { add_capabilities: ['SYS_PTRACE'], drop_capabilities: [], add_ambient_capabilities: [] } }) }));
    expect(ptr.linux.seccomp?.syscalls?.some((r) => r.names.includes('ptrace'))).toBe(false);
    const dropped = withSecurity(emptySpec(), input({ seccomp: 'runtime-default', config: cfg({}, { capabilities: { add_capabilities: ['SYS_PTRACE'], drop_capabilities: ['SYS_PTRACE'], add_ambient_capabilities: [] } }) }));
    expect(dropped.linux.seccomp?.syscalls?.some((r) => r.names.includes('ptrace'))).toBe(true);
  });

  it('AppArmor only where the kernel has it', () => {
    const local = cfg({}, { apparmor: { profile_type: 'Localhost', localhost_ref: 'localhost/my-prof' } as never });
    expect(withSecurity(emptySpec(), input({ config: local, apparmorEnabled: true })).process.apparmorProfile).toBe('my-prof');
    expect(withSecurity(emptySpec(), input({ config: local, apparmorEnabled: false })).process.apparmorProfile).toBeUndefined();
  });
});

/** JSON paths of every undefined value in `v` (recursing through arrays and plain objects). */
function undefinedPaths(v: unknown, at = '$'): string[] {
  if (v === undefined) return [at];
  if (Array.isArray(v)) return v.flatMap((x, i) => undefinedPaths(x, `${at}[${i}]`));
  if (typeof v === 'object' && v !== null) return Object.entries(v).flatMap(([k, x]) => undefinedPaths(x, `${at}.${k}`));
  return [];
}

describe('buildSpec', () => {
  it('composes every step into a spec runc accepts the shape of', () => {
    const s = buildSpec(input({ config: cfg({ annotations: { a: 'b' }, tty: true }, { readonly_rootfs: true }) }));
    expect(s.ociVersion).toBe('1.0.2');
    expect(s.root).toEqual({ path: '/rootfs/c1', readonly: true });
    expect(s.process.args).toEqual(['/entry', 'default']);
    expect(s.process.terminal).toBe(true);
    expect(s.hostname).toBe('podhost');
    expect(s.linux.cgroupsPath).toBe('/skiff/p1/c1');
    expect(s.annotations).toEqual({ a: 'b', 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'p1' });
    expect(s.mounts.map((m) => m.destination)).toEqual(expect.arrayContaining(['/proc', '/etc/hosts', '/etc/resolv.conf', '/etc/hostname', '/dev/shm']));
    // JSON-clean: no key holds undefined (JSON.stringify would drop it silently, hiding a missed value)
    expect(undefinedPaths(s)).toEqual([]);
    expect(undefinedPaths({ a: [1, { b: undefined }], c: undefined })).toEqual(['$.a[1].b', '$.c']);
  });

  it('SPEC_STEPS is a plain list and a custom list replaces it', () => {
    expect(Array.isArray(SPEC_STEPS)).toBe(true);
    const s = buildSpec(input(), [(spec) => ({ ...spec, hostname: 'only' })]);
    expect(s.hostname).toBe('only');
    expect(s.process.args).toEqual([]);
  });
});
