// Mount steps: the standard container filesystems, the pod's shared files (hostname, hosts, resolv.conf,
// /dev/shm) and the request's bind mounts. A request mount replaces any default at the same destination.
import { posix } from 'node:path';
import type { OciMount, OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { invalidArgument } from '../../errors.js';

export function defaultMounts(): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
  ];
}

const PROPAGATION: Record<string, string> = {
  PROPAGATION_PRIVATE: 'rprivate',
  PROPAGATION_HOST_TO_CONTAINER: 'rslave',
  PROPAGATION_BIDIRECTIONAL: 'rshared',
};

function bind(destination: string, source: string, readonly: boolean, propagation = 'rprivate'): OciMount {
  return { destination, type: 'bind', source, options: ['rbind', propagation, readonly ? 'ro' : 'rw'] };
}

/** Replaces mounts at the same destination, keeps the rest in order. */
function upsert(mounts: OciMount[], add: OciMount[]): OciMount[] {
  const dests = new Set(add.map((m) => m.destination));
  return [...mounts.filter((m) => !dests.has(m.destination)), ...add];
}

/** /etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm shared by the pod's containers. */
export function withPodFiles(spec: OciSpec, input: SpecInput): OciSpec {
  const { files } = input.pod;
  const ro = input.config.linux?.security_context?.readonly_rootfs ?? false;
  const add: OciMount[] = [];
  if (files.hostname) add.push(bind('/etc/hostname', files.hostname, ro));
  if (files.hosts) add.push(bind('/etc/hosts', files.hosts, ro));
  if (files.resolvConf) add.push(bind('/etc/resolv.conf', files.resolvConf, ro));
  if (files.shm) add.push(bind('/dev/shm', files.shm, false));
  else add.push({ destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] });
  return { ...spec, mounts: upsert(spec.mounts, add) };
}

/** /proc files runc lets a bind mount cover (what lxcfs provides); anything else below /proc it refuses. */
const PROC_MOUNTABLE = new Set(['/proc/cpuinfo', '/proc/diskstats', '/proc/meminfo', '/proc/stat', '/proc/swaps', '/proc/uptime', '/proc/loadavg', '/proc/slabinfo', '/proc/net/dev', '/proc/sys/kernel/ns_last_pid']);

function procDestinationRefused(dest: string): boolean {
  const clean = posix.normalize(dest).replace(/\/+$/, '');
  return (clean === '/proc' || clean.startsWith('/proc/')) && !PROC_MOUNTABLE.has(clean);
}

/** The request's mounts. Paths must be absolute; existence of host paths is checked by resolve.ts. */
export function withRequestMounts(spec: OciSpec, input: SpecInput): OciSpec {
  const add: OciMount[] = [];
  let rootfsPropagation = spec.linux.rootfsPropagation;
  for (const m of input.config.mounts) {
    if (!m.container_path.startsWith('/')) throw invalidArgument(`mount container_path must be absolute, got "${m.container_path}"`, { path: m.container_path });
    if (!m.host_path.startsWith('/')) throw invalidArgument(`mount host_path must be absolute, got "${m.host_path}"`, { path: m.host_path });
    if (procDestinationRefused(m.container_path)) throw invalidArgument(`mount container_path ${m.container_path}: the runtime refuses mounts into /proc except over its lxcfs-style files`, { path: m.container_path });
    const propagation = PROPAGATION[m.propagation] ?? 'rprivate';
    if (propagation === 'rshared') rootfsPropagation = 'rshared';
    else if (propagation === 'rslave' && rootfsPropagation !== 'rshared') rootfsPropagation = 'rslave';
    add.push(bind(m.container_path, m.host_path, m.readonly, propagation));
  }
  return { ...spec, mounts: upsert(spec.mounts, add), linux: { ...spec.linux, rootfsPropagation } };
}

export function withRootfs(spec: OciSpec, input: SpecInput): OciSpec {
  const readonly = input.config.linux?.security_context?.readonly_rootfs ?? false;
  return { ...spec, root: { path: input.rootfs, readonly } };
}
