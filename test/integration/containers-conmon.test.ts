// ConmonDriver.create with a real conmon and real runc behind a wrapper that is slow on `create`: when
// the create times out, nothing may live on (conmon, the runtime's create) and the runtime must not end
// up knowing the container after its bundle is gone.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConmonDriver } from '../../src/oci/conmon-driver.js';
import { runExec } from '../../src/oci/exec-sync.js';
import { RuntimeHandlers } from '../../src/oci/runtime-handlers.js';
import { SkiffError } from '../../src/errors.js';
import { makeScratchDir, removeScratchDir } from '../helpers/daemon.js';
import type { SkiffConfig } from '../../src/config/config.js';

let dir: string;
const SLOW_S = 3;

beforeAll(async () => {
  dir = await makeScratchDir('skoci-conmon-');
});
afterAll(async () => {
  if (dir) await removeScratchDir(dir);
});

/** Processes whose command line mentions `needle` (other than this test's own). */
async function processesWith(needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(needle)) found.push(`${pid}: ${cmd.replace(/\0/g, ' ').slice(0, 200)}`);
  }
  return found;
}

async function bundle(id: string): Promise<string> {
  const b = join(dir, 'bundles', id);
  await mkdir(join(b, 'rootfs', 'bin'), { recursive: true });
  await copyFile('/bin/busybox', join(b, 'rootfs', 'bin', 'busybox'));
  execFileSync('runc', ['spec', '--bundle', b]);
  const spec = JSON.parse(await readFile(join(b, 'config.json'), 'utf8')) as { process: { args: string[]; terminal: boolean }; root: { path: string } };
  spec.process.args = ['/bin/busybox', 'sleep', '1000'];
  spec.process.terminal = false;
  spec.root.path = join(b, 'rootfs');
  await writeFile(join(b, 'config.json'), JSON.stringify(spec));
  return b;
}

describe('ConmonDriver.create failure', () => {
  it('a create that times out leaves no conmon, no runtime process and no runtime state', async () => {
    const root = join(dir, 'runc-root');
    const wrapper = join(dir, 'slow-runc');
    await writeFile(wrapper, `#!/bin/sh\nfor a in "$@"; do [ "$a" = create ] && sleep ${SLOW_S}; done\nexec runc "$@"\n`);
    await chmod(wrapper, 0o755);
    const config = { runtimes: { slow: { name: 'slow', path: wrapper, root } }, defaultRuntime: 'slow' } as unknown as SkiffConfig;
    const driver = new ConmonDriver(new RuntimeHandlers(config), {
      conmonPath: 'conmon',
      exitDir: join(dir, 'exits'),
      socketDir: join(dir, 'attach'),
      cgroupDriver: 'cgroupfs',
      createTimeoutMs: 800,
    });
    const id = `skoci-slow-${process.pid}`;
    const b = await bundle(id);
    const t0 = Date.now();
    const err = await driver.create({ id, handler: 'slow', bundle: b, name: 'slow', stdin: false, tty: false }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('deadline_exceeded');
    expect(Date.now() - t0).toBeLessThan(SLOW_S * 1000);
    try {
      // past the point where the slow create would have gone through
      await new Promise((r) => setTimeout(r, SLOW_S * 1000 + 1500));
      expect(await processesWith(b)).toEqual([]);
      const st = spawnSync('runc', ['--root', root, 'state', id], { encoding: 'utf8' });
      expect(st.status, `runc still knows the container: ${st.stdout}`).not.toBe(0);
    } finally {
      spawnSync('runc', ['--root', root, 'delete', '-f', id]);
      for (const line of await processesWith(b)) {
        try {
          process.kill(Number(line.split(':')[0]), 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  });
});

describe('ExecSync without a timeout', () => {
  it('a monitor that never reports the pid is given up on (pid-arrival guard), and killed', async () => {
    // stands in for a wedged conmon: holds the sync pipe open and never writes to it
    const wedged = join(dir, 'wedged-conmon');
    const marker = `skoci-wedged-${process.pid}`;
    await copyFile('/bin/sleep', join(dir, marker));
    await writeFile(wedged, `#!/bin/sh\nexec ${join(dir, marker)} 1000\n`);
    await chmod(wedged, 0o755);
    const b = join(dir, 'exec-bundle');
    await mkdir(b, { recursive: true });
    const t0 = Date.now();
    const err = await runExec(
      { conmon: wedged, runtime: 'runc', runtimeArgs: [], id: 'skoci-none', bundle: b, socketDir: join(dir, 'attach'), pidTimeoutMs: 500 },
      { process: { args: ['true'], cwd: '/', env: [], user: { uid: 0, gid: 0 } }, timeoutMs: 0, maxOutputBytes: 1024 },
    ).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('deadline_exceeded');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await processesWith(marker)).toEqual([]);
  }, 20_000);
});
