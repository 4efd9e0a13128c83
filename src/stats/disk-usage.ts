// Bytes and inodes used under a directory (a container's writable layer), like `du -s` without crossing
// into other filesystems (bind mounts in the rootfs are not the container's own writes).
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface DiskUsage {
  bytes: bigint;
  inodes: bigint;
}

export async function diskUsage(root: string): Promise<DiskUsage | undefined> {
  let rootDev: bigint;
  try {
    rootDev = (await lstat(root, { bigint: true })).dev;
  } catch {
    return undefined;
  }
  const seen = new Set<bigint>();
  let bytes = 0n;
  let inodes = 0n;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let st;
    try {
      st = await lstat(dir, { bigint: true });
    } catch {
      continue;
    }
    if (st.dev !== rootDev) continue;
    if (!seen.has(st.ino)) {
      seen.add(st.ino);
      bytes += st.blocks * 512n;
      inodes++;
    }
    if (!st.isDirectory()) continue;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const n of names) stack.push(join(dir, n));
  }
  return { bytes, inodes };
}
