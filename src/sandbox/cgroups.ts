// The pod cgroup (cgroupfs driver): one directory in every cgroup mount (each v1 hierarchy, name=systemd, the v2 tree). Only the
// directories skiff created are removed again, deepest first. With the systemd driver the parent is a
// slice name handed to the OCI runtime, which asks systemd; nothing is created here (documented limit).
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { invalidArgument, errnoCode } from '../errors.js';
import { pathExists } from '../util/fs.js';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources.js';
import { mounts } from '../util/mountinfo.js';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** A cgroupfs parent must be an absolute, normalized path without '..'. */
export function checkCgroupfsPath(path: string): string {
  if (!path.startsWith('/') || path.split('/').includes('..') || posix.normalize(path) !== path || /[\0\n]/.test(path))
    throw invalidArgument(`cgroup_parent "${path}" must be an absolute cgroupfs path without ".."`, { path });
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}


/** cpuset v1 children start empty and refuse tasks until cpus/mems are set: copy the parent's. */
async function initCpuset(dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const own = await readFile(join(dir, file), 'utf8').catch(() => undefined);
    if (own === undefined || own.trim() !== '') continue;
    const parent = await readFile(join(dir, '..', file), 'utf8');
    await writeFile(join(dir, file), parent.trim());
  }
}

/**
 * Every cgroup mount, controllers or not: runc puts a container's cgroup below the pod's in each of them
 * (name=systemd and the v2 "unified" tree of a hybrid host too), so the pod dir must exist, and go, in all.
 */
export async function allCgroupMounts(): Promise<string[]> {
  const out = (await mounts())
    .filter((m) => m.mountPoint.startsWith(CGROUP_ROOT) && (m.fstype === 'cgroup' || m.fstype === 'cgroup2'))
    .map((m) => m.mountPoint);
  return [...new Set(out)];
}

/**
 * Creates `path` in every hierarchy. Returns the pod's own (leaf) directories that did not exist before:
 * those are removed with the pod. Ancestors created on the way are shared by other pods and stay.
 */
export async function createCgroup(path: string): Promise<string[]> {
  const created: string[] = [];
  for (const root of await allCgroupMounts()) {
    const parts = path.split('/').filter(Boolean);
    const cpuset = /(^|[/,])cpuset($|,)/.test(root);
    let dir = root;
    for (const [i, part] of parts.entries()) {
      dir = join(dir, part);
      if (await pathExists(dir)) continue;
      await mkdir(dir).catch((err: unknown) => {
        if (errnoCode(err) !== 'EEXIST') throw err; // another pod made the shared ancestor just now
      });
      if (cpuset) await initCpuset(dir);
      if (i === parts.length - 1) created.push(dir);
    }
  }
  return created;
}

/** Removes the given cgroup dirs, deepest first; retries briefly while the kernel still counts tasks. */
export async function removeCgroupDirs(dirs: readonly string[]): Promise<void> {
  const ordered = [...dirs].sort((a, b) => b.length - a.length);
  for (const dir of ordered) {
    for (let attempt = 0; ; attempt++) {
      try {
        await rmdir(dir);
        break;
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'ENOENT') break;
        // EBUSY right after the last task exits is normal; a dir with a child cgroup we did not create stays
        if ((code === 'EBUSY' || code === 'ENOTEMPTY') && attempt < 50) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        throw err;
      }
    }
  }
}

/** Limits for a pod cgroup skiff owns; absent = unlimited. */
export interface CgroupLimits {
  memoryBytes?: number;
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShares?: number;
}

type Resources = Pick<LinuxContainerResources__Output, 'cpu_period' | 'cpu_quota' | 'cpu_shares' | 'memory_limit_in_bytes'>;

const DEFAULT_CPU_PERIOD = 100_000;
const MAX_CPU_SHARES = 262_144;

/**
 * The pod's cap: `resources` (the sum of its containers' limits, as kubelet sends it) plus `overhead`.
 * A dimension the resources leave unlimited stays unlimited (an overhead alone caps nothing). The
 * overhead's CPU quota is rescaled to the resources' period.
 */
export function podCgroupLimits(resources: Resources | null | undefined, overhead: Resources | null | undefined): CgroupLimits {
  const num = (v: string | undefined, what: string) => {
    const n = Number(v ?? 0);
    if (!Number.isSafeInteger(n)) throw invalidArgument(`pod ${what} "${v}" is out of range`);
    return n;
  };
  const out: CgroupLimits = {};
  if (!resources) return out;
  const mem = num(resources.memory_limit_in_bytes, 'memory_limit_in_bytes');
  if (mem > 0) out.memoryBytes = mem + Math.max(0, num(overhead?.memory_limit_in_bytes, 'overhead memory_limit_in_bytes'));
  const quota = num(resources.cpu_quota, 'cpu_quota');
  if (quota > 0) {
    const period = num(resources.cpu_period, 'cpu_period') || DEFAULT_CPU_PERIOD;
    if (period < 1000 || period > 1_000_000) throw invalidArgument(`pod cpu_period ${period} must be 1000-1000000 µs`);
    const ovQuota = Math.max(0, num(overhead?.cpu_quota, 'overhead cpu_quota'));
    const ovPeriod = num(overhead?.cpu_period, 'overhead cpu_period') || DEFAULT_CPU_PERIOD;
    out.cpuPeriod = period;
    out.cpuQuota = quota + Math.round((ovQuota * period) / ovPeriod);
  }
  const shares = num(resources.cpu_shares, 'cpu_shares');
  if (shares > 0) out.cpuShares = Math.min(MAX_CPU_SHARES, shares + Math.max(0, num(overhead?.cpu_shares, 'overhead cpu_shares')));
  return out;
}

/** cgroup v2 cpu.weight for v1 cpu.shares (the conversion runc and crun use, integer division). */
export function sharesToWeight(shares: number): number {
  return 1 + Math.floor(((shares - 2) * 9999) / 262_142);
}

/**
 * A systemd slice name as its path in a cgroup hierarchy: each '-' opens a level, so
 * "kubepods-burstable-pod1.slice" lives at /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice
 * ("-.slice" is the root). Invalid names (empty levels, characters systemd refuses) are INVALID_ARGUMENT.
 */
export function expandSlice(slice: string): string {
  const bad = () => invalidArgument(`"${slice}" is not a systemd slice name`, { path: slice });
  if (slice === '-.slice') return '/';
  if (!slice.endsWith('.slice')) throw bad();
  const base = slice.slice(0, -'.slice'.length);
  if (!/^[a-zA-Z0-9:_.\\-]+$/.test(base) || base.split('-').some((part) => part === '')) throw bad();
  const parts = base.split('-');
  return parts.map((_p, i) => `/${parts.slice(0, i + 1).join('-')}.slice`).join('');
}

/** Where a pod's cgroup parent lives below each hierarchy's mount point, for either driver. */
export function cgroupFsPath(driver: 'cgroupfs' | 'systemd', parent: string): string {
  return driver === 'systemd' ? expandSlice(parent) : parent;
}

/** Writes the limits into the given pod dirs, each file only where its controller is (v1 or v2). */
export async function applyCgroupLimits(dirs: readonly string[], limits: CgroupLimits): Promise<void> {
  for (const dir of dirs) {
    const has = (file: string) => pathExists(join(dir, file));
    const put = (file: string, value: string) => writeFile(join(dir, file), value);
    if (limits.memoryBytes !== undefined) {
      if (await has('memory.limit_in_bytes')) await put('memory.limit_in_bytes', String(limits.memoryBytes));
      else if (await has('memory.max')) await put('memory.max', String(limits.memoryBytes));
    }
    if (limits.cpuQuota !== undefined && limits.cpuPeriod !== undefined) {
      if (await has('cpu.cfs_quota_us')) {
        await put('cpu.cfs_period_us', String(limits.cpuPeriod));
        await put('cpu.cfs_quota_us', String(limits.cpuQuota));
      } else if (await has('cpu.max')) await put('cpu.max', `${limits.cpuQuota} ${limits.cpuPeriod}`);
    }
    if (limits.cpuShares !== undefined) {
      if (await has('cpu.shares')) await put('cpu.shares', String(limits.cpuShares));
      else if (await has('cpu.weight')) await put('cpu.weight', String(sharesToWeight(limits.cpuShares)));
    }
  }
}
