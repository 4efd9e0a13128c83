// The k129 spec steps (CDI edits, pod user namespace, idmapped mounts) inside the whole buildSpec pipeline,
// so their order against the other steps (devices, mounts, security) is what is tested.
import { describe, it, expect } from 'vitest';
import { buildSpec } from '../../src/oci/spec/build.js';
import type { SpecInput } from '../../src/oci/spec/input.js';
import type { ContainerConfig__Output } from '../../src/gen/runtime/v1/ContainerConfig.js';
import type { Mount__Output } from '../../src/gen/runtime/v1/Mount.js';
import type { IdmappedMount } from '../../src/oci/spec/idmap-mounts.js';
import { SkiffError } from '../../src/errors.js';
import { makeMountTargets } from '../../src/containers/k129-prepare.js';
import { mkdtemp, mkdir, symlink, writeFile, stat, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function mount(container_path: string, host_path: string, maps?: { uid: [number, number, number]; gid: [number, number, number] }): Mount__Output {
  const m = (t: [number, number, number]) => [{ container_id: t[0], host_id: t[1], length: t[2] }];
  return {
    container_path,
    host_path,
    readonly: false,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: maps ? m(maps.uid) : [],
    gidMappings: maps ? m(maps.gid) : [],
  } as unknown as Mount__Output;
}

function input(over: { mounts?: Mount__Output[]; userns?: boolean; cdi?: SpecInput['cdi']; privileged?: boolean } = {}): SpecInput {
  const config = {
    metadata: { name: 'c', attempt: 0 },
    image: { image: 'busybox' },
    command: ['/bin/sh'],
    args: [],
    working_dir: '',
    envs: [{ key: 'FOO', value: 'from-request' }],
    mounts: over.mounts ?? [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: '',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: over.privileged ? { security_context: { privileged: true, masked_paths: [], readonly_paths: [] } } : null,
    CDI_devices: [],
  } as unknown as ContainerConfig__Output;
  const mapping = [{ containerId: 0, hostId: 100000, size: 65536 }];
  return {
    containerId: 'c1',
    config,
    image: {},
    pod: {
      id: 'pod1',
      namespaces: { net: '/run/netns/x' },
      cgroupParent: '/skiff/pod1',
      files: {},
      uidMappings: over.userns ? mapping : undefined,
      gidMappings: over.userns ? mapping : undefined,
      config: { hostname: 'h', linux: null },
    },
    rootfs: '/r',
    user: { uid: 0, gid: 0, additionalGids: [] },
    devices: [],
    apparmorEnabled: false,
    cgroupDriver: 'cgroupfs',
    cdi: over.cdi,
  };
}

describe('CDI step', () => {
  it('adds the device node with its cgroup rule after the default deny, the mount, env and GIDs', () => {
    const spec = buildSpec(
      input({
        cdi: {
          devices: ['vendor.com/dev=a'],
          edits: [
            {
              env: ['FOO=from-cdi', 'BAR=1'],
              deviceNodes: [{ path: '/dev/vnull', type: 'c', major: 1, minor: 3, fileMode: 0o666 }],
              mounts: [{ hostPath: '/srv/lib', containerPath: '/usr/lib/vendor', options: ['ro'] }],
              hooks: [{ hookName: 'createContainer', path: '/bin/true' }],
              additionalGids: [44],
            },
          ],
        },
      }),
    );
    expect(spec.linux.devices).toContainEqual({ path: '/dev/vnull', type: 'c', major: 1, minor: 3, fileMode: 0o666 });
    const rules = spec.linux.resources?.devices ?? [];
    expect(rules[0]).toEqual({ allow: false, access: 'rwm' });
    expect(rules.at(-1)).toEqual({ allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' });
    expect(spec.mounts).toContainEqual({ destination: '/usr/lib/vendor', type: 'bind', source: '/srv/lib', options: ['ro', 'rbind'] });
    // CDI env is applied over the request's (the device vendor knows what its device needs)
    expect(spec.process.env).toContain('FOO=from-cdi');
    expect(spec.process.env).toContain('BAR=1');
    expect(spec.process.env.filter((e) => e.startsWith('FOO='))).toHaveLength(1);
    expect(spec.process.user.additionalGids).toEqual([44]);
    expect((spec as { hooks?: unknown }).hooks).toEqual({ createContainer: [{ path: '/bin/true' }] });
  });

  it('changes nothing without CDI devices', () => {
    expect(buildSpec(input({ cdi: { devices: [], edits: [] } }))).toEqual(buildSpec(input()));
  });
});

describe('user namespace and idmapped mounts steps', () => {
  it('gives a container of a userns pod a new user namespace with the pod mappings', () => {
    const spec = buildSpec(input({ userns: true }));
    expect(spec.linux.namespaces.filter((n) => n.type === 'user')).toEqual([{ type: 'user' }]);
    expect(spec.linux.uidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    expect(spec.linux.gidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    // the pod's UTS namespace (owned by the host userns) already has its name; setting it would be EPERM
    const withUts = input({ userns: true });
    withUts.pod.namespaces = { ...withUts.pod.namespaces, uts: '/run/skiff/uts' };
    expect(buildSpec(withUts).hostname).toBeUndefined();
    withUts.pod.uidMappings = undefined;
    expect(buildSpec(withUts).hostname).toBe('h');
  });

  it('joins the pod\'s pinned user namespace without the fallbacks for host-owned namespaces', () => {
    const pinned = input({ userns: true });
    pinned.pod.namespaces = { net: '/run/x/net', ipc: '/run/x/ipc', uts: '/run/x/uts', user: '/run/x/user' };
    const spec = buildSpec(pinned);
    expect(spec.linux.namespaces.filter((n) => n.type === 'user')).toEqual([{ type: 'user', path: '/run/x/user' }]);
    expect(spec.hostname).toBe('h');
    expect(spec.mounts.find((m) => m.destination === '/dev/mqueue')?.type).toBe('mqueue');
    expect(spec.mounts.find((m) => m.destination === '/sys')?.type).toBe('sysfs');
    // an older pod record without a pinned user namespace: its namespaces belong to the host's
    pinned.pod.namespaces = { net: '/run/x/net', ipc: '/run/x/ipc', uts: '/run/x/uts' };
    const old = buildSpec(pinned);
    expect(old.mounts.some((m) => m.type === 'mqueue')).toBe(false);
    expect(old.mounts.find((m) => m.destination === '/sys')).toEqual({ destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] });
  });

  it('leaves pods without userns in the host user namespace', () => {
    const spec = buildSpec(input());
    expect(spec.linux.namespaces.some((n) => n.type === 'user')).toBe(false);
    expect(spec.linux.uidMappings).toBeUndefined();
  });

  it('puts the mount mappings on the mapped bind mount only', () => {
    const spec = buildSpec(
      input({ userns: true, mounts: [mount('/data', '/srv/data', { uid: [0, 100000, 65536], gid: [0, 100000, 65536] }), mount('/plain', '/srv/plain')] }),
    );
    const data = spec.mounts.find((m) => m.destination === '/data') as IdmappedMount;
    expect(data.uidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    expect(data.gidMappings).toEqual([{ containerID: 0, hostID: 100000, size: 65536 }]);
    const plain = spec.mounts.find((m) => m.destination === '/plain') as IdmappedMount;
    expect(plain.uidMappings).toBeUndefined();
    const written = JSON.parse(JSON.stringify(spec)) as { mounts: IdmappedMount[] };
    expect(written.mounts.find((m) => m.destination === '/data')?.uidMappings).toHaveLength(1);
  });

  it('refuses mapped mounts in a pod without user namespace, and half-given mappings', () => {
    const noUserns = () => buildSpec(input({ mounts: [mount('/data', '/srv/data', { uid: [0, 100000, 65536], gid: [0, 100000, 65536] })] }));
    expect(noUserns).toThrow(SkiffError);
    expect(noUserns).toThrow(/mount \/data has uid\/gid mappings but pod pod1 has no user namespace/);
    const half = { ...mount('/data', '/srv/data', { uid: [0, 100000, 65536], gid: [0, 100000, 65536] }), gidMappings: [] } as unknown as Mount__Output;
    expect(() => buildSpec(input({ userns: true, mounts: [half] }))).toThrow(/uidMappings and gidMappings must be given together/);
  });
});

describe('mount targets for user-namespaced containers', () => {
  it('makes missing dirs and files in the rootfs, never through a symlink, never in runtime-made filesystems', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sk129-targets-'));
    try {
      const rootfs = join(dir, 'rootfs');
      const outside = join(dir, 'outside');
      await mkdir(join(rootfs, 'etc'), { recursive: true });
      await mkdir(outside);
      await symlink(outside, join(rootfs, 'evil'));
      const srcFile = join(dir, 'hosts');
      await writeFile(srcFile, '');
      await makeMountTargets(
        [
          { destination: '/etc/hosts', type: 'bind', source: srcFile, options: ['rbind'] },
          { destination: '/data/deep', type: 'bind', source: dir, options: ['rbind'] },
          { destination: '/evil/x', type: 'bind', source: srcFile, options: ['rbind'] },
          { destination: '/dev/shm', type: 'bind', source: dir },
          { destination: '/proc', type: 'proc', source: 'proc' },
          { destination: '/scratch', type: 'tmpfs', source: 'tmpfs' },
        ],
        rootfs,
      );
      expect((await stat(join(rootfs, 'etc/hosts'))).isFile()).toBe(true);
      expect((await stat(join(rootfs, 'data/deep'))).isDirectory()).toBe(true);
      expect((await stat(join(rootfs, 'scratch'))).isDirectory()).toBe(true);
      expect(await readdir(outside)).toEqual([]);
      expect((await readdir(rootfs)).sort()).toEqual(['data', 'etc', 'evil', 'scratch']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
