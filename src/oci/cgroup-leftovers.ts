// runc creates a container's cgroup in every mounted hierarchy, making the pod's directory on the way in
// hierarchies the pods module does not manage (name=systemd, and the v2 "unified" mount of a hybrid
// host). Once the pod's last container is gone those empty pod directories are ours to remove.
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import { allCgroupMounts } from '../sandbox/cgroups.js';

/**
 * Removes `path` (a cgroupfs path like /kubepods/pod1) wherever it is left empty. Never throws; returns
 * the dirs that stayed, with why.
 */
export async function removeEmptyCgroupDir(path: string): Promise<string[]> {
  const left: string[] = [];
  if (!path.startsWith('/') || path.split('/').includes('..')) return left;
  for (const mnt of await allCgroupMounts().catch(() => [] as string[])) {
    const dir = join(mnt, path);
    for (let attempt = 0; attempt < 25; attempt++) {
      const code = await rmdir(dir).then(
        () => 'ok',
        (err: unknown) => errnoCode(err) ?? 'error',
      );
      // EBUSY for a moment after the last task left; anything else (ENOENT, ENOTEMPTY: still used) is final
      if (code !== 'EBUSY' || attempt === 24) {
        if (code !== 'ok' && code !== 'ENOENT') left.push(`${dir}: ${code}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return left;
}
