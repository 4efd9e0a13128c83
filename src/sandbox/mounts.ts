// Host mount helpers for pod sandboxes: which paths are mount points, a private mount for the pod dirs,
// tmpfs for /dev/shm, and unmounting that tolerates "already gone".
import { mkdir } from 'node:fs/promises';
import { isMountPoint, mountPoints } from '../util/mountinfo.js';
import { run, runChecked } from '../util/exec.js';

const MOUNT_TIMEOUT_MS = 10_000;

export { isMountPoint, mountPoints } from '../util/mountinfo.js';

/** Mount points at or below `dir`. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return (await mountPoints()).filter((m) => m === dir || m.startsWith(prefix));
}

/**
 * Makes `dir` a mount of its own with private propagation, so the namespace pins and tmpfs mounts made
 * below it never propagate to (or from) other mount namespaces, where a copy would keep them alive.
 */
export async function ensurePrivateMount(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  if (!(await isMountPoint(dir))) await runChecked('mount', ['--bind', dir, dir], { timeoutMs: MOUNT_TIMEOUT_MS });
  await runChecked('mount', ['--make-private', dir], { timeoutMs: MOUNT_TIMEOUT_MS });
}

export async function mountTmpfs(path: string, options: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o755 });
  await runChecked('mount', ['-t', 'tmpfs', '-o', options, 'shm', path], { timeoutMs: MOUNT_TIMEOUT_MS });
}

/** Unmounts every mount stacked on `path`; a path that is not mounted (or gone) is fine. */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 16 && (await isMountPoint(path)); i++) {
    const res = await run('umount', [path], { timeoutMs: MOUNT_TIMEOUT_MS });
    if (res.code !== 0 && (await isMountPoint(path))) {
      // Busy (a process still holds it open): detach it; the kernel frees it when the last user goes.
      await runChecked('umount', ['-l', path], { timeoutMs: MOUNT_TIMEOUT_MS });
    }
  }
}
