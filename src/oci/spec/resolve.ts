// The disk-reading half of spec building: looks up what the pure steps need (users and groups inside
// the image, host paths, device nodes, a Localhost seccomp profile, the daemon's oom_score_adj).
import { lstat, open, readFile, readlink, stat } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import type { ContainerConfig__Output } from '../../gen/runtime/v1/ContainerConfig.js';
import type { ResolvedDevice, ResolvedUser } from './input.js';
import type { OciSeccomp } from './types.js';
import { parseGroup, parsePasswd, resolveUser } from './user.js';
import { seccompChoice } from './seccomp.js';
import { errnoCode, errorMessage, invalidArgument } from '../../errors.js';

/** The largest /etc/passwd or /etc/group we read from an image (real ones are a few KiB). */
export const ROOTFS_FILE_LIMIT = 1024 * 1024;
/** Symlinks followed in one lookup before it counts as a loop (Linux's own limit). */
const MAX_SYMLINKS = 40;

/**
 * Resolves `path` the way the container would see it: every symlink (absolute or relative) is followed
 * inside `rootfs`, `..` stops at its root, so no answer ever names a host path. The last component is
 * not followed if it is a symlink that could not be resolved further (the caller opens with O_NOFOLLOW).
 * undefined when a component does not exist.
 */
async function resolveInRootfs(rootfs: string, path: string): Promise<string | undefined> {
  const todo = path.split('/').filter((p) => p !== '' && p !== '.');
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    const here = join(rootfs, ...done, part);
    let st;
    try {
      st = await lstat(here);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw err;
    }
    if (!st.isSymbolicLink()) {
      done.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) throw invalidArgument(`image file /${path}: too many levels of symbolic links`, { path: `/${path}` });
    const target = await readlink(here);
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return join(rootfs, ...done);
}

/**
 * Reads a small regular file of the image (its passwd or group). Missing means absent (''). Anything
 * else odd is the image's fault and an INVALID_ARGUMENT: a FIFO (a layer may hold one; a plain read would
 * block a libuv thread forever), a device, a directory, or a file over ROOTFS_FILE_LIMIT. The open is
 * non-blocking and does not follow a final symlink, and the checks run on the opened file.
 */
export async function readInRootfs(rootfs: string, path: string): Promise<string> {
  const real = await resolveInRootfs(rootfs, path);
  if (real === undefined) return '';
  let fh;
  try {
    fh = await open(real, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return '';
    throw invalidArgument(`image file /${path} cannot be opened: ${errnoCode(err) ?? errorMessage(err)}`, { path: `/${path}` });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw invalidArgument(`image file /${path} is not a regular file`, { path: `/${path}` });
    if (st.size > ROOTFS_FILE_LIMIT) throw invalidArgument(`image file /${path} is ${st.size} bytes, over the ${ROOTFS_FILE_LIMIT}-byte limit`, { path: `/${path}` });
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got).toString('utf8');
  } finally {
    await fh.close();
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
      // like a missing mount host path: the request names something that is not there
      throw invalidArgument(`device ${d.host_path}: ${errnoCode(err) === 'ENOENT' ? 'does not exist' : errorMessage(err)}`, { path: d.host_path });
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

export async function resolveSeccomp(config: ContainerConfig__Output): Promise<OciSeccomp | 'runtime-default' | undefined> {
  const choice = seccompChoice(config.linux?.security_context);
  if (choice.kind === 'unconfined') return undefined;
  // built with the container's capabilities by the security step
  if (choice.kind === 'runtime-default') return 'runtime-default';
  let text: string;
  try {
    text = await readFile(choice.path, 'utf8');
  } catch (err) {
    throw invalidArgument(`seccomp profile ${choice.path}: ${errnoCode(err) === 'ENOENT' ? 'does not exist' : errorMessage(err)}`, { path: choice.path });
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
