// readInRootfs: the image's /etc/passwd and /etc/group are read inside the rootfs, never past it, never
// blocking (a FIFO) and never unbounded (a huge file).
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, mkdir, writeFile, symlink, rm, truncate } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readInRootfs, resolveContainerUser, ROOTFS_FILE_LIMIT } from '../../src/oci/spec/resolve.js';
import { SkiffError } from '../../src/errors.js';
import type { ContainerConfig__Output } from '../../src/gen/runtime/v1/ContainerConfig.js';

let dir: string;
let rootfs: string;
let host: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skoci-rootfs-'));
  rootfs = join(dir, 'rootfs');
  host = join(dir, 'host');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await mkdir(join(rootfs, 'usr/lib'), { recursive: true });
  await mkdir(host, { recursive: true });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const kindOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof SkiffError ? e.kind : String(e)));

describe('readInRootfs', () => {
  it('reads a plain file and treats a missing one as absent', async () => {
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('root:x:0:0::/root:/bin/sh\n');
    expect(await readInRootfs(rootfs, 'etc/group')).toBe('');
    expect(await readInRootfs(rootfs, 'nodir/group')).toBe('');
  });

  it('a FIFO fails at once with INVALID_ARGUMENT instead of blocking', async () => {
    execFileSync('mkfifo', [join(rootfs, 'etc/passwd')]);
    const t0 = Date.now();
    expect(await kindOf(readInRootfs(rootfs, 'etc/passwd'))).toBe('invalid_argument');
    expect(Date.now() - t0).toBeLessThan(1000);
    // and through a symlink to it
    await symlink('/etc/passwd', join(rootfs, 'etc/group'));
    expect(await kindOf(readInRootfs(rootfs, 'etc/group'))).toBe('invalid_argument');
  });

  it('a file over the limit is refused without reading it', async () => {
    await writeFile(join(rootfs, 'etc/passwd'), '');
    await truncate(join(rootfs, 'etc/passwd'), ROOTFS_FILE_LIMIT + 1);
    expect(await kindOf(readInRootfs(rootfs, 'etc/passwd'))).toBe('invalid_argument');
    await truncate(join(rootfs, 'etc/passwd'), ROOTFS_FILE_LIMIT);
    expect((await readInRootfs(rootfs, 'etc/passwd')).length).toBe(ROOTFS_FILE_LIMIT);
  });

  it('an absolute symlink resolves inside the rootfs', async () => {
    await writeFile(join(rootfs, 'usr/lib/passwd'), 'app:x:1000:1000::/home/app:/bin/sh\n');
    await symlink('/usr/lib/passwd', join(rootfs, 'etc/passwd'));
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('app:x:1000:1000::/home/app:/bin/sh\n');
    // a directory link on the way, and .. that tries to climb past the root
    await rm(join(rootfs, 'etc/passwd'));
    await symlink('../../../../usr/lib/passwd', join(rootfs, 'etc/passwd'));
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('app:x:1000:1000::/home/app:/bin/sh\n');
  });

  it('a symlink naming a host path never reads the host file', async () => {
    const secret = join(host, 'secret');
    await writeFile(secret, 'host:x:0:0::/:/bin/sh\n');
    await symlink(secret, join(rootfs, 'etc/passwd'));
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('');
    await rm(join(rootfs, 'etc/passwd'));
    await symlink(`../../host/secret`, join(rootfs, 'etc/passwd'));
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('');
    // a directory symlink out of the rootfs
    await rm(join(rootfs, 'etc'), { recursive: true });
    await symlink(host, join(rootfs, 'etc'));
    await writeFile(join(host, 'passwd'), 'host:x:0:0::/:/bin/sh\n');
    expect(await readInRootfs(rootfs, 'etc/passwd')).toBe('');
  });

  it('a symlink loop is an error, not a hang', async () => {
    await symlink('/etc/b', join(rootfs, 'etc/a'));
    await symlink('/etc/a', join(rootfs, 'etc/b'));
    expect(await kindOf(readInRootfs(rootfs, 'etc/a'))).toBe('invalid_argument');
  });

  it('resolveContainerUser reports a FIFO passwd as a bad image', async () => {
    execFileSync('mkfifo', [join(rootfs, 'etc/passwd')]);
    const config = { linux: { security_context: null } } as unknown as ContainerConfig__Output;
    expect(await kindOf(resolveContainerUser(config, 'app', rootfs))).toBe('invalid_argument');
  });
});
