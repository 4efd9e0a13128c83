// Which paths are mount points, from this process's mountinfo (no `mountpoint` fork per question).
import { readFile, realpath } from 'node:fs/promises';

/** mountinfo escapes space, tab, newline and backslash as octal (\040). */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points of this process's mount namespace, in mount order (later entries stack on earlier). */
export async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''));
}

/** Whether `path` is a mount point. mountinfo lists canonical paths, so symlinks are resolved first. */
export async function isMountPoint(path: string): Promise<boolean> {
  const real = await realpath(path).catch(() => path);
  return (await mountPoints()).includes(real);
}
