// Container root filesystems from image snapshots: the images subsystem used in-process as the containers
// code uses it (ctx.images), with a real registry and real overlay mounts (root).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, readdir, writeFile, lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageService } from '../../src/image/images.js';
import { RuntimeHandlers } from '../../src/oci/runtime-handlers.js';
import { configFromToml } from '../../src/config/config.js';
import { createLogger } from '../../src/log.js';
import { isMounted } from '../../src/image/rootfs.js';
import { makeScratchDir, removeScratchDir } from '../helpers/daemon.js';
import { startRegistry, pushImage, pushBusybox, type TestRegistry } from '../helpers/registry.js';
import { image, layer, busyboxEntries, type Layer } from '../helpers/images.js';
import { runChecked } from '../../src/util/exec.js';

let reg: TestRegistry;
let dir: string;
let svc: ImageService;
beforeAll(async () => {
  reg = await startRegistry();
  dir = await makeScratchDir('skiff-rootfs-');
  const cfg = configFromToml({ root: join(dir, 'root'), state: join(dir, 'state') }, 'test');
  svc = new ImageService(cfg, new RuntimeHandlers(cfg), createLogger('silent'));
  await svc.init();
});
afterAll(async () => {
  for (const c of await svc.rootfs.all()) await svc.removeRootfs(c.containerId);
  await svc.close();
  await reg.stop();
  await removeScratchDir(dir);
});

/** Runs `args` in a throw-away runc container whose root is `root`; returns stdout. */
async function runIn(root: string, name: string, args: string[]): Promise<string> {
  const bundle = join(dir, `bundle-${name}`);
  await mkdir(bundle, { recursive: true });
  await runChecked('runc', ['spec'], { cwd: bundle, timeoutMs: 10_000 });
  const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as { root: { path: string; readonly: boolean }; process: { args: string[]; terminal: boolean } };
  spec.root = { path: root, readonly: false };
  spec.process.args = args;
  spec.process.terminal = false;
  await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
  const res = await runChecked('runc', ['run', '--bundle', bundle, `skimg-${name}-${process.pid}`], { timeoutMs: 30_000 });
  return res.stdout;
}

describe('prepareRootfs / removeRootfs', () => {
  it('stacks 200 layers in order with whiteouts, opaque dirs and a 64 KiB label', async () => {
    const layers: Layer[] = [];
    layers.push(await layer([...busyboxEntries(), { name: 'etc/base', content: 'base' }, { name: 'etc/doomed', content: 'x' }, { name: 'data/', type: 'directory' }, { name: 'data/old', content: 'old' }, { name: 'hl/a', content: 'linked' }, { name: 'hl/b', type: 'link', linkname: 'hl/a' }, { name: 'redo/old', content: 'old' }]));
    for (let i = 1; i < 196; i++) layers.push(await layer([{ name: `layers/${i}`, content: String(i) }, { name: 'top', content: String(i) }]));
    layers.push(await layer([{ name: 'etc/.wh.doomed', content: '' }, { name: 'hl/.wh.a', content: '' }]));
    // a directory recreated over its own whiteout hides everything the lower one had
    layers.push(await layer([{ name: 'redo/', type: 'directory' }, { name: 'redo/fresh', content: 'f' }, { name: '.wh.redo', content: '' }], 'zstd'));
    layers.push(await layer([{ name: 'data/', type: 'directory' }, { name: 'data/.wh..wh..opq', content: '' }, { name: 'data/new', content: 'new' }], 'zstd'));
    layers.push(await layer([{ name: 'top', content: 'last' }]));
    expect(layers).toHaveLength(200);
    const label = 'l'.repeat(64 * 1024);
    const name = await pushImage(reg, 'many/layers', 'v1', image(layers, { config: { Labels: { big: label }, Entrypoint: ['/bin/sh'], WorkingDir: '/data' } }));
    const rec = await svc.pull({ image: name });
    expect(rec.chainIds).toHaveLength(200);
    expect(rec.config.config?.Labels?.big).toHaveLength(64 * 1024);
    const resolved = await svc.require('many/layers:v1'.replace('many', `${reg.host}/many`));
    expect(resolved.id).toBe(rec.id);
    const root = await svc.prepareRootfs(rec, 'c200');
    expect(await isMounted(root)).toBe(true);
    expect(await readFile(join(root, 'top'), 'utf8')).toBe('last');
    expect(await readFile(join(root, 'layers/150'), 'utf8')).toBe('150');
    expect(await readFile(join(root, 'etc/base'), 'utf8')).toBe('base');
    await expect(lstat(join(root, 'etc/doomed'))).rejects.toThrow(/ENOENT/);
    expect(await readdir(join(root, 'data'))).toEqual(['new']);
    // a hardlink whose first name is whited out later survives
    await expect(lstat(join(root, 'hl/a'))).rejects.toThrow(/ENOENT/);
    expect(await readFile(join(root, 'hl/b'), 'utf8')).toBe('linked');
    expect(await readdir(join(root, 'redo'))).toEqual(['fresh']);
    // and it runs: runc on a bundle whose root is this overlay
    const out = await runIn(root, 'c200', ['sh', '-c', 'cat /top; echo; ls /data /redo; cat /layers/7']);
    expect(out).toBe('last\n/data:\nnew\n\n/redo:\nfresh\n7');
    // idempotent
    expect(await svc.prepareRootfs(rec, 'c200')).toBe(root);
    await svc.removeRootfs('c200');
    expect(await isMounted(root)).toBe(false);
    await svc.remove(rec.id);
  });

  it('removing an image a container uses does not break the container; its snapshots go with the container', async () => {
    const name = await pushBusybox(reg);
    const rec = await svc.pull({ image: name });
    const root = await svc.prepareRootfs(rec, 'user1');
    await writeFile(join(root, 'written-by-container'), 'mine');
    expect(await svc.remove(name)).toBe(true);
    expect(await svc.resolve(name)).toBeUndefined();
    // still readable and writable, and the write went to the container's upper dir
    expect((await lstat(join(root, 'bin/busybox'))).isFile()).toBe(true);
    expect(await readFile(join(dir, 'root/rootfs/user1/upper/written-by-container'), 'utf8')).toBe('mine');
    const snapDir = join(dir, 'root/images/runc/snapshots');
    expect((await readdir(snapDir)).filter((n) => /^\d+$/.test(n))).toHaveLength(1);
    const usage = await svc.containerFilesystemUsage();
    expect(usage.usedBytes).toBeGreaterThan(0);
    await svc.removeRootfs('user1');
    expect((await readdir(snapDir)).filter((n) => /^\d+$/.test(n))).toEqual([]);
    await svc.removeRootfs('user1');
  });
});
