// Helpers two areas share: conmon's sync message (create and exec) and the mount point check (pods and
// image rootfs).
import { describe, it, expect } from 'vitest';
import { mkdtemp, rm, symlink, mkdir, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { removeTree, pathExists } from '../../src/util/fs.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConmonSync } from '../../src/oci/conmon-sync.js';
import { isMountPoint } from '../../src/util/mountinfo.js';
import { run } from '../../src/util/exec.js';
import { cancelled } from '../../src/errors.js';
import { Readable } from 'node:stream';

describe('parseConmonSync', () => {
  it('reads data (api v1), pid as a fallback, and the message', () => {
    expect(parseConmonSync('{"data": 1234}')).toEqual({ value: 1234, message: undefined });
    expect(parseConmonSync('{"pid": 99}')).toEqual({ value: 99, message: undefined });
    expect(parseConmonSync('{"data": -1, "message": "runc create failed"}')).toEqual({ value: -1, message: 'runc create failed' });
    expect(parseConmonSync('{"data": "x", "message": 5}')).toEqual({ value: NaN, message: undefined });
    expect(() => parseConmonSync('not json')).toThrow();
  });
});

describe('isMountPoint', () => {
  it('knows mount points, also through a symlink; a plain or missing dir is not one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skoci-mnt-'));
    try {
      expect(await isMountPoint('/proc')).toBe(true);
      expect(await isMountPoint('/')).toBe(true);
      expect(await isMountPoint(dir)).toBe(false);
      expect(await isMountPoint(join(dir, 'missing'))).toBe(false);
      await symlink('/proc', join(dir, 'link'));
      expect(await isMountPoint(join(dir, 'link'))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('run', () => {
  it('kills the command (and what it started) when its signal fires, and rejects with the reason', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const p = run('sh', ['-c', 'sleep 30 & sleep 30; echo never'], { timeoutMs: 60_000, signal: ac.signal });
    setTimeout(() => ac.abort(cancelled('the caller went away')), 100);
    await expect(p).rejects.toEqual(expect.objectContaining({ kind: 'cancelled' }));
    expect(Date.now() - started).toBeLessThan(10_000);
    await expect(run('true', [], { signal: AbortSignal.abort(cancelled('already')) })).rejects.toEqual(expect.objectContaining({ kind: 'cancelled' }));
  });

  it('pipes a stream into the command', async () => {
    const res = await run('wc', ['-c'], { input: Readable.from([Buffer.alloc(3 << 20, 1)]) });
    expect(res.stdout.trim()).toBe(String(3 << 20));
  });
});

describe('removeTree', () => {
  it('removes a tree, is fine with nothing there, and never reaches into a mount inside it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-rmtree-'));
    try {
      await mkdir(join(dir, 'a/b/c'), { recursive: true });
      await writeFile(join(dir, 'a/b/c/f'), 'x');
      await removeTree(join(dir, 'a'));
      expect(await pathExists(join(dir, 'a'))).toBe(false);
      await removeTree(join(dir, 'never-there'));
      await mkdir(join(dir, 'held/mnt'), { recursive: true });
      expect(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', join(dir, 'held/mnt')]).status).toBe(0);
      try {
        await writeFile(join(dir, 'held/mnt/precious'), 'keep');
        await expect(removeTree(join(dir, 'held'))).rejects.toThrow(/could not remove/);
        expect(await pathExists(join(dir, 'held/mnt/precious'))).toBe(true);
      } finally {
        spawnSync('umount', [join(dir, 'held/mnt')]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('run with a stream as input', () => {
  it('a stream that fails ends the command and rejects, and nothing is left unhandled', async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error('input broke'));
      },
    });
    await expect(run('cat', [], { input: failing, timeoutMs: 20_000 })).rejects.toThrow(/input broke/);
  });
});
