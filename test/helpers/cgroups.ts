// Test cgroup trees: a test gives its pods a cgroup parent of its own and removes the tree at the end.
import { readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

async function rmTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await rmTree(join(dir, e.name));
  // a memory cgroup whose children just went may be busy for a moment: retry briefly
  for (let i = 0; i < 20; i++) {
    const err = await rmdir(dir).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e.code,
    );
    if (err !== 'EBUSY') break;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Removes `top` (e.g. "/skiff-test-x") in every hierarchy: empty dirs only, deepest first (anything in use stays). */
export async function removeCgroupTree(top: string): Promise<void> {
  for (const ctl of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) await rmTree(join('/sys/fs/cgroup', ctl, top));
}
