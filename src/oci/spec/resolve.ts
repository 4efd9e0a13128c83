// The disk-reading half of spec building: looks up what the pure steps need (users and groups inside
// the image, host paths, device nodes, a Localhost seccomp profile, the daemon's oom_score_adj).
import { readFile, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { ContainerConfig__Output } from '../../gen/runtime/v1/ContainerConfig.js';
import type { ResolvedDevice, ResolvedUser } from './input.js';
import type { OciSeccomp } from './types.js';
import { parseGroup, parsePasswd, resolveUser } from './user.js';
import { runtimeDefaultSeccomp, seccompChoice } from './seccomp.js';
import { errnoCode, errorMessage, invalidArgument, notFound } from '../../errors.js';

/** Reads a file inside the rootfs; a symlink that leads outside it counts as absent. */
async function readInRootfs(rootfs: string, path: string): Promise<string> {
  try {
    const real = await realpath(join(rootfs, path));
    const root = await realpath(rootfs);
    if (real !== root && !real.startsWith(root + sep)) return '';
    return await readFile(real, 'utf8');
  } catch {
    return '';
  }
}

export async function resolveContainerUser(config: ContainerConfig__Output, imageUser: string | undefined, rootfs: string): Promise<ResolvedUser> {
  const [passwd, group] = await Promise.all([readInRootfs(rootfs, 'etc/passwd'), readInRootfs(rootfs, 'etc/group')]);
  return resolveUser(config.linux?.security_context, imageUser, parsePasswd(passwd), parseGroup(group));
}

/** A bind mount of a missing host path is an error: kubelet creates what it wants created. */
export async function checkHostPaths(config: ContainerConfig__Output): Promise<void> {
  for (const m of config.mounts) {
    try {
      await stat(m.host_path);
    } catch (err) {
      throw invalidArgument(`mount host path ${m.host_path}: ${errnoCode(err) === 'ENOENT' ? 'does not exist' : errorMessage(err)}`, {
        path: m.host_path,
      });
    }
  }
}

/**
 * Major and minor of a Linux dev_t (glibc's major()/minor() bit layout). dev_t is 64-bit: JavaScript's
 * bitwise operators are 32-bit, so the high part goes through BigInt.
 */
export function deviceNumbers(rdev: number): { major: number; minor: number } {
  const d = BigInt(rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n);
  const minor = (d & 0xffn) | ((d >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

export async function resolveDevices(config: ContainerConfig__Output): Promise<ResolvedDevice[]> {
  const out: ResolvedDevice[] = [];
  for (const d of config.devices) {
    let st;
    try {
      st = await stat(d.host_path);
    } catch (err) {
      throw notFound(`device ${d.host_path}: ${errorMessage(err)}`, { path: d.host_path });
    }
    if (!st.isCharacterDevice() && !st.isBlockDevice()) throw invalidArgument(`device ${d.host_path} is not a device node`, { path: d.host_path });
    const rdev = st.rdev;
    out.push({
      type: st.isBlockDevice() ? 'b' : 'c',
      path: d.container_path || d.host_path,
      ...deviceNumbers(rdev),
      fileMode: st.mode & 0o777,
      uid: st.uid,
      gid: st.gid,
      permissions: d.permissions || 'rwm',
    });
  }
  return out;
}

export async function resolveSeccomp(config: ContainerConfig__Output): Promise<OciSeccomp | undefined> {
  const choice = seccompChoice(config.linux?.security_context);
  if (choice.kind === 'unconfined') return undefined;
  if (choice.kind === 'runtime-default') return runtimeDefaultSeccomp();
  let text: string;
  try {
    text = await readFile(choice.path, 'utf8');
  } catch (err) {
    throw notFound(`seccomp profile ${choice.path}: ${errorMessage(err)}`, { path: choice.path });
  }
  try {
    const profile = JSON.parse(text) as OciSeccomp;
    if (typeof profile.defaultAction !== 'string') throw new Error('no defaultAction');
    return profile;
  } catch (err) {
    throw invalidArgument(`seccomp profile ${choice.path} is not a valid profile: ${errorMessage(err)}`, { path: choice.path });
  }
}

export async function ownOomScoreAdj(): Promise<number> {
  try {
    return Number((await readFile('/proc/self/oom_score_adj', 'utf8')).trim()) || 0;
  } catch {
    return 0;
  }
}

export async function apparmorEnabled(): Promise<boolean> {
  try {
    return (await readFile('/sys/module/apparmor/parameters/enabled', 'utf8')).trim() === 'Y';
  } catch {
    return false;
  }
}
