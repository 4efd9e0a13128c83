// The pod cgroup (cgroupfs driver): one directory per v1 hierarchy, or one in the v2 tree. Only the
// directories skiff created are removed again, deepest first. With the systemd driver the parent is a
// slice name handed to the OCI runtime, which asks systemd; nothing is created here (documented limit).
import { mkdir, readFile, rmdir, writeFile, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { invalidArgument, errnoCode } from '../errors.js';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Mount points of the cgroup hierarchies to create pod dirs in. */
export async function cgroupHierarchies(): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const v1: string[] = [];
  let v2: string | undefined;
  for (const line of info.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mountPoint = left.split(' ')[4] ?? '';
    const [fstype, , superOpts = ''] = right.split(' ');
    if (!mountPoint.startsWith(CGROUP_ROOT)) continue;
    if (fstype === 'cgroup2') v2 = mountPoint;
    // the name=systemd hierarchy has no controller: leave it to systemd
    else if (fstype === 'cgroup' && !superOpts.split(',').includes('name=systemd')) v1.push(mountPoint);
  }
  // Pure v2 host: the one tree. Hybrid (v1 controllers + a v2 "unified" mount): the v1 hierarchies.
  if (v1.length === 0 && v2 !== undefined) return [v2];
  return [...new Set(v1)];
}

/** A cgroupfs parent must be an absolute, normalized path without '..'. */
export function checkCgroupfsPath(path: string): string {
  if (!path.startsWith('/') || path.split('/').includes('..') || posix.normalize(path) !== path || /[\0\n]/.test(path))
    throw invalidArgument(`cgroup_parent "${path}" must be an absolute cgroupfs path without ".."`, { path });
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
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
 * Creates `path` in every hierarchy. Returns the pod's own (leaf) directories that did not exist before:
 * those are removed with the pod. Ancestors created on the way are shared by other pods and stay.
 */
export async function createCgroup(path: string): Promise<string[]> {
  const created: string[] = [];
  for (const root of await cgroupHierarchies()) {
    const parts = path.split('/').filter(Boolean);
    const cpuset = /(^|[/,])cpuset($|,)/.test(root);
    let dir = root;
    for (const [i, part] of parts.entries()) {
      dir = join(dir, part);
      if (await exists(dir)) continue;
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
