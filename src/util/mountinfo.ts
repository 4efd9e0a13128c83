// Which paths are mount points, from this process's mountinfo (no `mountpoint` fork per question).
import { readFile, realpath } from 'node:fs/promises';

/** mountinfo escapes space, tab, newline and backslash as octal (\040). */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  mountPoint: string;
  fstype: string;
}

/** Mounts of this process's mount namespace, in mount order (later entries stack on earlier). */
export async function mounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      // optional fields come before the " - " separator; the filesystem type is the first after it
      const [left = '', right = ''] = line.split(' - ');
      return { mountPoint: unescapeMountPath(left.split(' ')[4] ?? ''), fstype: right.split(' ')[0] ?? '' };
    });
}

/** Mount points of this process's mount namespace, in mount order. */
export async function mountPoints(): Promise<string[]> {
  return (await mounts()).map((m) => m.mountPoint);
}

/** Whether `path` is a mount point. mountinfo lists canonical paths, so symlinks are resolved first. */
export async function isMountPoint(path: string): Promise<boolean> {
  const real = await realpath(path).catch(() => path);
  return (await mountPoints()).includes(real);
}
