// Layer unpacking against a hostile corpus built with tar-stream: every escape attempt must leave nothing
// outside the layer directory. Runs as root (device nodes, overlay whiteouts).
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, mkdir, readdir, readFile, lstat, readlink, rm, stat, writeFile, appendFile, rename } from 'node:fs/promises';
import { readdirSync, readlinkSync, existsSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { unpackLayer, unpackLayerFile, unpackGrowingFile, cleanPath, MAX_ENTRY_XATTR_BYTES, MAX_DEFERRED_OPS } from '../../src/image/unpack.js';
import { tarOf, layerFromTar, type LayerEntry, type Compression } from '../helpers/images.js';
import { cancelled } from '../../src/errors.js';

let base: string;
let dest: string;
let outside: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), 'skiff-unpack-'));
  dest = join(base, 'layer', 'fs');
  outside = join(base, 'outside');
  await mkdir(dest, { recursive: true });
  await mkdir(outside);
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function apply(entries: LayerEntry[], compression: Compression = 'none') {
  const tar = await tarOf(entries);
  const l = layerFromTar(tar, compression);
  return unpackLayer(Readable.from([l.data]), dest, l.diffId);
}

async function everythingUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

describe('cleanPath', () => {
  it('roots names at the layer', () => {
    expect(cleanPath('../../etc/passwd')).toEqual(['etc', 'passwd']);
    expect(cleanPath('/abs/x')).toEqual(['abs', 'x']);
    expect(cleanPath('./a/./b/../c')).toEqual(['a', 'c']);
    expect(cleanPath('./')).toEqual([]);
  });
});

describe('unpackLayer', () => {
  it.each(['none', 'gzip', 'zstd'] as const)('unpacks %s layers with modes, owners, mtimes, links and xattrs', async (c) => {
    const mtime = new Date(1_600_000_000_000);
    const res = await apply(
      [
        { name: 'dir/', type: 'directory', mode: 0o750, uid: 12, gid: 34, mtime },
        { name: 'dir/file', content: 'hello', mode: 0o4755, uid: 1000, gid: 1000, mtime, pax: { 'SCHILY.xattr.user.test': 'v1' } },
        { name: 'dir/hard', type: 'link', linkname: 'dir/file' },
        { name: 'dir/sym', type: 'symlink', linkname: '/etc/passwd' },
        { name: 'deep/no/parents/file', content: 'x' },
        { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'fifo', type: 'fifo', mode: 0o600 },
      ],
      c,
    );
    expect(res.size).toBe(6);
    const st = await lstat(join(dest, 'dir/file'));
    expect(st.mode & 0o7777).toBe(0o4755);
    expect([st.uid, st.gid]).toEqual([1000, 1000]);
    expect(st.mtimeMs).toBe(mtime.getTime());
    expect(st.nlink).toBe(2);
    const d = await lstat(join(dest, 'dir'));
    expect(d.mode & 0o7777).toBe(0o750);
    expect(d.mtimeMs).toBe(mtime.getTime());
    expect(await readlink(join(dest, 'dir/sym'))).toBe('/etc/passwd');
    expect((await lstat(join(dest, 'deep/no/parents'))).isDirectory()).toBe(true);
    expect((await lstat(join(dest, 'dev/null'))).isCharacterDevice()).toBe(true);
    expect((await lstat(join(dest, 'fifo'))).isFIFO()).toBe(true);
    const x = spawnSync('getfattr', ['-n', 'user.test', '--only-values', join(dest, 'dir/file')], { encoding: 'utf8' });
    expect(x.stdout).toBe('v1');
  });

  it('converts OCI whiteouts into overlay whiteouts and opaque dirs', async () => {
    await apply([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/.wh.gone', content: '' },
      { name: 'opaque/', type: 'directory' },
      { name: 'opaque/.wh..wh..opq', content: '' },
      { name: 'opaque/new', content: 'n' },
      { name: 'recreated/.wh.x', content: '' },
      { name: 'recreated/x', content: 'back' },
    ]);
    const w = await lstat(join(dest, 'etc/gone'));
    expect(w.isCharacterDevice()).toBe(true);
    expect(w.rdev).toBe(0);
    const x = spawnSync('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', join(dest, 'opaque')], { encoding: 'utf8' });
    expect(x.stdout).toBe('y');
    expect(await readFile(join(dest, 'recreated/x'), 'utf8')).toBe('back');
    expect(await everythingUnder(dest)).not.toContain('etc/.wh.gone');
  });

  it('never writes outside the layer directory', async () => {
    // a symlink to the outside, then entries trying to go through it
    const hostile: LayerEntry[] = [
      { name: '../../outside/dotdot', content: 'a' },
      { name: '/abs-outside', content: 'b' },
      { name: 'escape', type: 'symlink', linkname: outside },
      { name: 'rel-escape', type: 'symlink', linkname: '../../outside' },
    ];
    await apply(hostile);
    for (const through of ['escape/through-abs', 'rel-escape/through-rel']) {
      await expect(apply([{ name: 'escape', type: 'symlink', linkname: outside }, { name: 'rel-escape', type: 'symlink', linkname: '../../outside' }, { name: through, content: 'c' }])).rejects.toThrow(/symlink/);
    }
    await expect(apply([{ name: 'h', type: 'link', linkname: '../../outside/target' }])).rejects.toThrow(/not in this layer/);
    await expect(apply([{ name: 'h2', type: 'link', linkname: '/etc/passwd' }])).rejects.toThrow(/not in this layer/);
    // a hardlink through a symlinked dir of this layer
    await expect(apply([{ name: 'esc', type: 'symlink', linkname: '/etc' }, { name: 'h3', type: 'link', linkname: 'esc/passwd' }])).rejects.toThrow(/symlink/);
    // a whiteout through a symlink
    await expect(apply([{ name: 'esc2', type: 'symlink', linkname: outside }, { name: 'esc2/.wh.victim', content: '' }])).rejects.toThrow(/symlink/);
    expect(await everythingUnder(outside)).toEqual([]);
    expect(await everythingUnder(join(base, 'layer'))).toEqual(expect.arrayContaining(['fs', 'fs/outside', 'fs/outside/dotdot', 'fs/abs-outside']));
    expect(await readdir(base)).toEqual(['layer', 'outside']);
    // /etc/passwd of the host untouched
    expect((await stat('/etc/passwd')).isFile()).toBe(true);
  });

  it('ignores overlay xattrs smuggled in pax headers', async () => {
    await apply([{ name: 'd/', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y' } }]);
    const x = spawnSync('getfattr', ['-n', 'trusted.overlay.opaque', join(dest, 'd')], { encoding: 'utf8' });
    expect(x.status).not.toBe(0);
  });

  it('fails on a diff_id mismatch and on garbage', async () => {
    const tar = await tarOf([{ name: 'a', content: 'a' }]);
    const l = layerFromTar(tar, 'gzip');
    await expect(unpackLayer(Readable.from([l.data]), dest, 'sha256:' + '0'.repeat(64))).rejects.toThrow(/diff_id/);
    await expect(unpackLayer(Readable.from([Buffer.from('\x1f\x8bgarbage garbage')]), dest)).rejects.toThrow();
    await expect(unpackLayer(Readable.from([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3])]), dest)).rejects.toThrow(/zstd/);
  });
});

describe('deferred operations keep the order of the layer', () => {
  it('xattrs of fifos and device nodes are set once the node exists', async () => {
    await apply([{ name: 'p', type: 'fifo', pax: { 'SCHILY.xattr.trusted.t': 'on the fifo' } }]);
    expect(spawnSync('getfattr', ['-n', 'trusted.t', '--only-values', join(dest, 'p')], { encoding: 'utf8' }).stdout).toBe('on the fifo');
  });

  it("a layer's own fifo is not replaced by its own whiteout", async () => {
    const res = await apply([{ name: 'x', type: 'fifo' }, { name: '.wh.x', content: '' }]);
    expect((await lstat(join(dest, 'x'))).isFIFO()).toBe(true);
    expect(res.skippedDevices).toEqual([]);
  });

  it('whiteouts deep down a tree are created where they belong', async () => {
    const deep = Array.from({ length: 500 }, (_, i) => `d${i}`).join('/');
    await apply([{ name: `${deep}/keep`, content: 'k' }, ...Array.from({ length: 300 }, (_, i) => ({ name: `${deep}/.wh.gone${i}`, content: '' }))]);
    const st = await lstat(join(dest, deep, 'gone299'));
    expect(st.isCharacterDevice() && st.rdev === 0).toBe(true);
  });
});

describe('cancelling an unpack', () => {
  it('an abort right after the call stops it before it has applied the layer', async () => {
    const tar = await tarOf(Array.from({ length: 5000 }, (_, i) => ({ name: `f${i}`, content: '' })));
    const ac = new AbortController();
    const result = unpackLayer(Readable.from([tar]), dest, undefined, undefined, ac.signal);
    ac.abort(cancelled('gave up'));
    await expect(result).rejects.toEqual(expect.objectContaining({ kind: 'cancelled' }));
    expect((await readdir(dest)).length).toBeLessThan(5000);
  });
});

describe('whiteouts within one layer', () => {
  const opaque = (p: string) => spawnSync('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', p], { encoding: 'utf8' }).stdout;

  it('a whiteout never removes what the same layer adds, whatever the entry order', async () => {
    await apply([
      { name: 'x', content: 'mine' },
      { name: '.wh.x', content: '' },
      { name: 'h/a', content: 'linked' },
      { name: 'h/b', type: 'link', linkname: 'h/a' },
      { name: 'h/.wh.a', content: '' },
    ]);
    expect(await readFile(join(dest, 'x'), 'utf8')).toBe('mine');
    expect(await readFile(join(dest, 'h/a'), 'utf8')).toBe('linked');
    expect(await readFile(join(dest, 'h/b'), 'utf8')).toBe('linked');
  });

  it.each([
    ['whiteout first', [{ name: '.wh.d', content: '' }, { name: 'd/', type: 'directory' as const }, { name: 'd/new', content: 'n' }]],
    ['whiteout last', [{ name: 'd/', type: 'directory' as const }, { name: 'd/new', content: 'n' }, { name: '.wh.d', content: '' }]],
    ['no dir entry', [{ name: '.wh.d', content: '' }, { name: 'd/new', content: 'n' }]],
  ])('a directory recreated over a whiteout is opaque (%s)', async (_n, entries) => {
    await apply(entries);
    expect((await lstat(join(dest, 'd'))).isDirectory()).toBe(true);
    expect(opaque(join(dest, 'd'))).toBe('y');
    expect(await readFile(join(dest, 'd/new'), 'utf8')).toBe('n');
  });
});

describe('deferred operations never follow a symlink that replaced a parent later in the layer', () => {
  it.each([
    ['whiteout', { name: 'a/.wh.victim', content: '' }],
    ['opaque marker', { name: 'a/.wh..wh..opq', content: '' }],
    ['device node', { name: 'a/dev', type: 'fifo' as const }],
    ['xattr', { name: 'a/f', content: 'x', pax: { 'SCHILY.xattr.user.evil': '1' } }],
  ])('%s', async (_n, first) => {
    // the later entry replaces `a`, so the earlier operation under it is moot: dropped, never applied outside
    await apply([{ name: 'a/', type: 'directory' }, first, { name: 'a', type: 'symlink', linkname: outside }]);
    expect(await readlink(join(dest, 'a'))).toBe(outside);
    expect(await everythingUnder(outside)).toEqual([]);
    expect(spawnSync('getfattr', ['-d', '-m', '-', outside], { encoding: 'utf8' }).stdout).toBe('');
  });
});

/** A pax extended-header record: "<len> key=value\n", where len counts the whole record. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A tar whose first entry is a pax header (typeflag `g` global or `x` local) with raw records, then `files`. */
function tarWithPax(records: [string, Buffer][], files: string[], type: 'x' | 'g' = 'x'): Promise<Buffer> {
  return tarWithRawPax(Buffer.concat(records.map(([k, v]) => paxRecord(k, v))), files, type);
}

/** As tarWithPax, with the header's body given byte for byte (malformed lengths included). */
async function tarWithRawPax(body: Buffer, files: string[], type: 'x' | 'g'): Promise<Buffer> {
  const tar = await tarOf([{ name: 'PaxHeader', content: body }, ...files.map((name) => ({ name, content: 'x' }))]);
  // tar-stream's packer writes no raw pax headers: turn the first entry into one and fix its checksum
  tar[156] = type.charCodeAt(0);
  tar.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[i];
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return tar;
}

describe('xattrs are applied byte for byte', () => {
  it('keeps binary values (file capabilities, bytes over 0x7f) exactly', async () => {
    // v2 capability, effective, permitted cap_setuid (bit 7: byte 0x80) and cap_net_raw (bit 13)
    const cap = Buffer.from('0100000280200000000000000000000000000000', 'hex');
    const bin = Buffer.from([1, 0x80, 0xff, 0xfe]);
    const tar = await tarWithPax([['SCHILY.xattr.security.capability', cap], ['SCHILY.xattr.user.bin', bin]], ['f']);
    await unpackLayer(Readable.from([tar]), dest);
    const dump = spawnSync('getfattr', ['-d', '-e', 'hex', '-m', '-', join(dest, 'f')], { encoding: 'utf8' }).stdout;
    expect(dump).toContain(`security.capability=0x${cap.toString('hex')}`);
    expect(dump).toContain(`user.bin=0x${bin.toString('hex')}`);
  });

  it('an xattr belongs to its entry: a later entry at the same path does not get it', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const body = (t: Buffer) => t.subarray(0, -1024); // without the end-of-archive blocks, to chain them
    // each of g, d and s first comes with an xattr, then again as an entry without one (a file, a
    // directory, a symlink): GNU tar leaves all three without the earlier xattr
    const tar = Buffer.concat([
      body(await tarWithPax([['SCHILY.xattr.security.capability', cap]], ['g'])),
      body(await tarWithPax([['SCHILY.xattr.trusted.was', Buffer.from('here')]], ['d'])),
      body(await tarWithPax([['SCHILY.xattr.trusted.was', Buffer.from('here')]], ['s'])),
      await tarOf([{ name: 'g', content: 'plain' }, { name: 'd/', type: 'directory' }, { name: 's', type: 'symlink', linkname: 'g' }]),
    ]);
    await unpackLayer(Readable.from([tar]), dest);
    for (const name of ['g', 'd', 's']) expect(spawnSync('getfattr', ['-h', '-d', '-m', '-', join(dest, name)], { encoding: 'utf8' }).stdout, name).toBe('');
    expect(await readFile(join(dest, 'g'), 'utf8')).toBe('plain');
  });

  it('a directory declared again keeps its xattrs; a hardlink keeps those of the file it links', async () => {
    const body = (t: Buffer) => t.subarray(0, -1024);
    const tar = Buffer.concat([
      body(await tarWithPax([['SCHILY.xattr.trusted.was', Buffer.from('dir')]], [])),
      body(await tarOf([{ name: 'd/', type: 'directory' }])),
      body(await tarWithPax([['SCHILY.xattr.trusted.was', Buffer.from('file')]], ['a'])),
      body(await tarWithPax([['SCHILY.xattr.trusted.self', Buffer.from('linked')]], ['s'])),
      await tarOf([{ name: 'd/', type: 'directory' }, { name: 'b', type: 'link', linkname: 'a' }, { name: 's', type: 'link', linkname: 's' }, { name: 'a', content: 'new a' }]),
    ]);
    await unpackLayer(Readable.from([tar]), dest);
    const attr = (name: string, key: string) => spawnSync('getfattr', ['-n', key, '--only-values', join(dest, name)], { encoding: 'utf8' }).stdout;
    expect(attr('d', 'trusted.was')).toBe('dir');
    expect(attr('b', 'trusted.was')).toBe('file');
    expect(attr('a', 'trusted.was')).toBe('');
    expect(attr('s', 'trusted.self')).toBe('linked');
  });

  it('what was deferred under a directory goes with it when the directory is replaced', async () => {
    await apply([{ name: 'd/', type: 'directory' }, { name: 'd/p', type: 'fifo' }, { name: 'd', content: 'file' }, { name: 'd/', type: 'directory' }]);
    expect(await readdir(join(dest, 'd'))).toEqual([]);
  });

  it('a file or fifo replaced by an implicit parent directory leaves it none of its xattrs or nodes', async () => {
    const res = await apply([
      { name: 'f', content: 'file', pax: { 'SCHILY.xattr.trusted.was': 'file' } },
      { name: 'f/x', content: 'x' },
      { name: 'f/', type: 'directory' },
      { name: 'p', type: 'fifo' },
      { name: 'p/x', content: 'x' },
      { name: 'p/', type: 'directory' },
    ]);
    expect(spawnSync('getfattr', ['-n', 'trusted.was', '--only-values', join(dest, 'f')], { encoding: 'utf8' }).stdout).toBe('');
    expect((await lstat(join(dest, 'p'))).isDirectory()).toBe(true);
    expect(res.skippedDevices).toEqual([]);
  });

  it('a hardlink to a fifo or device node of the layer is made, and keeps it when the first name is replaced', async () => {
    const res = await apply([
      { name: 'p', type: 'fifo', pax: { 'SCHILY.xattr.trusted.t': 'on p' } },
      { name: 'q', type: 'link', linkname: 'p' },
      { name: 'p', content: 'now a file' },
      { name: 'n', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'm', type: 'link', linkname: 'n' },
    ]);
    expect(res.skippedDevices).toEqual([]);
    expect((await lstat(join(dest, 'q'))).isFIFO()).toBe(true);
    expect(spawnSync('getfattr', ['-n', 'trusted.t', '--only-values', join(dest, 'q')], { encoding: 'utf8' }).stdout).toBe('on p');
    expect(await readFile(join(dest, 'p'), 'utf8')).toBe('now a file');
    for (const name of ['n', 'm']) {
      const st = await lstat(join(dest, name));
      expect([st.isCharacterDevice(), st.rdev]).toEqual([true, (1 << 8) | 3]);
    }
  });

  it('a directory ends with the mtime it was last declared with, never that of a tree it replaced', async () => {
    const [t1, t2] = [new Date('2001-01-01T00:00:00Z'), new Date('2002-02-02T00:00:00Z')];
    await apply([
      { name: 'a/', type: 'directory', mtime: t1 },
      { name: 'a/', type: 'directory', mtime: t2 },
      { name: 'd/', type: 'directory', mtime: t1 },
      { name: 'd/s/', type: 'directory', mtime: t1 },
      { name: 'd', content: 'file' },
      { name: 'd/s/x', content: 'x' },
    ]);
    expect((await stat(join(dest, 'a'))).mtime).toEqual(t2);
    expect((await stat(join(dest, 'd'))).mtime).not.toEqual(t1);
    expect((await stat(join(dest, 'd/s'))).mtime).not.toEqual(t1);
  });

  it('ignores a pax global header, as containerd does: its records reach no entry', async () => {
    const body = (t: Buffer) => t.subarray(0, -1024);
    const global: [string, Buffer][] = [['uid', Buffer.from('1000')], ['SCHILY.xattr.trusted.g', Buffer.from('global')], ['path', Buffer.from('renamed')]];
    const tar = Buffer.concat([body(await tarWithPax(global, [], 'g')), body(await tarOf([{ name: 'a', content: 'a' }])), await tarWithPax([['SCHILY.xattr.trusted.own', Buffer.from('b')]], ['b'])]);
    await unpackLayer(Readable.from([tar]), dest);
    expect((await readdir(dest)).sort()).toEqual(['a', 'b']);
    for (const name of ['a', 'b']) {
      expect((await lstat(join(dest, name))).uid, name).toBe(0);
      expect(spawnSync('getfattr', ['-n', 'trusted.g', '--only-values', join(dest, name)], { encoding: 'utf8' }).stdout, name).toBe('');
    }
    expect(spawnSync('getfattr', ['-n', 'trusted.own', '--only-values', join(dest, 'b')], { encoding: 'utf8' }).stdout).toBe('b');
  });

  it('counts a pax header its own records, not those a global header merged in', async () => {
    const half = (prefix: string): [string, Buffer][] => Array.from({ length: 300 }, (_, i) => [`${prefix}${i}`, Buffer.from('v')]);
    const body = (t: Buffer) => t.subarray(0, -1024);
    const tar = Buffer.concat([body(await tarWithPax(half('g'), [], 'g')), await tarWithPax(half('x'), ['f'])]);
    await unpackLayer(Readable.from([tar]), dest);
    expect(await readFile(join(dest, 'f'), 'utf8')).toBe('x');
  });

  it('a negative pax length does not hide records from the cap', async () => {
    // tar-stream reads "-N" as "the last N bytes": a header whose first record says so is all decoded
    const records = Buffer.concat(Array.from({ length: 600 }, (_, i) => paxRecord(`k${i}`, Buffer.from('v'))));
    const tar = await tarWithRawPax(Buffer.concat([Buffer.from(`-${records.length} a=b\n`), records]), ['f'], 'g');
    await expect(unpackLayer(Readable.from([tar]), dest)).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
  });

  it('counts pax records as tar-stream reads them (a length like "11x" is 11)', async () => {
    // tar-stream parses the length with parseInt: a parser that stopped at "11x" would count one record
    const records = [Buffer.from('11x a=bcde\n'), ...Array.from({ length: 600 }, (_, i) => paxRecord(`k${i}`, Buffer.from('v')))];
    const tar = await tarWithRawPax(Buffer.concat(records), ['f'], 'g');
    await expect(unpackLayer(Readable.from([tar]), dest)).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
  });

  it('refuses pax headers with too many records or too many bytes, global ones included', async () => {
    const many: [string, Buffer][] = Array.from({ length: 5000 }, (_, i) => [`SCHILY.xattr.trusted.overlay.k${i}`, Buffer.from('v')]);
    for (const type of ['x', 'g'] as const) {
      await expect(unpackLayer(Readable.from([await tarWithPax(many, ['f'], type)]), dest)).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument', message: expect.stringMatching(/pax/) as unknown }));
    }
    const big: [string, Buffer][] = [['comment', Buffer.alloc(1 << 20, 0x61)]];
    await expect(unpackLayer(Readable.from([await tarWithPax(big, ['f'])]), dest)).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
  });
});

describe('hostile layers stay bounded', () => {
  const kind = (k: string): unknown => expect.objectContaining({ kind: k });

  it('refuses an entry whose xattrs are larger than Linux allows', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 100; i++) many[`SCHILY.xattr.user.x${i}`] = 'v'.repeat(1024);
    await expect(apply([{ name: 'f', content: 'x', pax: many }])).rejects.toEqual(kind('invalid_argument'));
    await expect(apply([{ name: 'g', content: 'x', pax: { 'SCHILY.xattr.user.big': 'v'.repeat(MAX_ENTRY_XATTR_BYTES + 1) } }])).rejects.toEqual(kind('invalid_argument'));
  });

  it('refuses a layer whose deferred work (xattrs, whiteouts, directories) would grow without bound', async () => {
    // each entry is within the per-entry limit; together they are far over the layer's budget
    const entries: LayerEntry[] = [];
    const value = 'v'.repeat(MAX_ENTRY_XATTR_BYTES - 100);
    for (let i = 0; i < 600; i++) entries.push({ name: `f${i}`, content: '', pax: { 'SCHILY.xattr.user.big': value } });
    await expect(apply(entries)).rejects.toThrow(/budget|too much/);
  });

  it('replaces a directory of many files with a file', async () => {
    const entries: LayerEntry[] = [{ name: 'gone/', type: 'directory' }, { name: 'gone/sub/', type: 'directory' }];
    for (let i = 0; i < 3000; i++) entries.push({ name: `gone/sub/f${i}`, content: '' });
    entries.push({ name: 'gone', content: 'now a file' }, { name: 'gone2/sub/x', content: 'y' });
    await apply(entries);
    expect(await readFile(join(dest, 'gone'), 'utf8')).toBe('now a file');
    expect(await everythingUnder(dest)).toEqual(['gone', 'gone2', 'gone2/sub', 'gone2/sub/x']);
  });

  it('handles deep paths in linear time and refuses names longer than PATH_MAX', async () => {
    const deep = Array.from({ length: 1000 }, () => 'd').join('/');
    const entries: LayerEntry[] = Array.from({ length: 2000 }, (_, i) => ({ name: `${deep}/f${i}`, content: '' }));
    await apply(entries);
    expect((await readdir(join(dest, deep))).length).toBe(2000);
    await expect(apply([{ name: `${'x/'.repeat(2100)}f`, content: '' }])).rejects.toEqual(kind('invalid_argument'));
  });

  it.each(['.wh..', '.wh...', 'sub/.wh...'])('refuses the whiteout %s, which names no entry', async (name) => {
    await expect(apply([{ name: 'sub/', type: 'directory' }, { name, content: '' }])).rejects.toEqual(kind('invalid_argument'));
    expect(spawnSync('getfattr', ['-n', 'trusted.overlay.opaque', join(base, 'layer')], { encoding: 'utf8' }).status).not.toBe(0);
  });

  it('refuses more whiteouts, device nodes and xattrs than a layer may defer', async () => {
    const entries: LayerEntry[] = Array.from({ length: MAX_DEFERRED_OPS + 1 }, (_, i) => ({ name: `w/.wh.${i}`, content: '' }));
    await expect(apply(entries)).rejects.toThrow(/more than .* whiteouts/);
  });

  it('creates many whiteouts in one go', async () => {
    const entries: LayerEntry[] = Array.from({ length: 3000 }, (_, i) => ({ name: `w/.wh.${i}`, content: '' }));
    entries.push({ name: 'x/f', content: 'x', pax: { 'SCHILY.xattr.user.a': 'A', 'SCHILY.xattr.user.b': '\n=\\ odd' } }, { name: 'x/.wh..wh..opq', content: '' });
    await apply(entries);
    const st = await lstat(join(dest, 'w/2999'));
    expect(st.isCharacterDevice() && st.rdev === 0).toBe(true);
    expect((await readdir(join(dest, 'w'))).length).toBe(3000);
    const attrs = spawnSync('getfattr', ['-d', '-e', 'hex', join(dest, 'x/f')], { encoding: 'utf8' }).stdout;
    expect(attrs).toContain('user.a=0x41');
    expect(attrs).toContain(`user.b=0x${Buffer.from('\n=\\ odd').toString('hex')}`);
    expect(spawnSync('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', join(dest, 'x')], { encoding: 'utf8' }).stdout).toBe('y');
  });

  it('gives the event loop turns while it applies a layer of many small entries', async () => {
    const entries: LayerEntry[] = [];
    for (let i = 0; i < 12000; i++) entries.push({ name: `d${i % 50}/f${i}`, content: '' });
    const tar = await tarOf(entries);
    let turns = 0;
    let stop = false;
    const spin = (async () => {
      while (!stop) {
        await nextTurn();
        turns++;
      }
    })();
    // one in-memory chunk: without yields the whole layer would be applied in a single turn
    const res = await unpackLayer(Readable.from([tar]), dest);
    stop = true;
    await spin;
    expect(res.diffId).toMatch(/^sha256:/);
    expect((await readdir(join(dest, 'd49'))).length).toBe(240);
    expect(turns).toBeGreaterThan(20);
  });
});

/** Rewrites the typeflag (and with it the checksum) of the header at `offset` in a tar from tarOf. */
function retype(tar: Buffer, offset: number, flag: string | 0): Buffer {
  tar[offset + 156] = flag === 0 ? 0 : flag.charCodeAt(0);
  tar.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = offset; i < offset + 512; i++) sum += tar[i];
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, offset + 148, 'latin1');
  return tar;
}

describe('entries as GNU tar reads them', () => {
  const kind = (k: string): unknown => expect.objectContaining({ kind: k });

  it('takes uid, gid and mtime from a pax header (a large id is only there)', async () => {
    const mtime = new Date('2003-03-03T03:03:03.250Z');
    await apply([
      { name: 'suid', content: '#!/bin/sh\n', mode: 0o4755, uid: 0, gid: 0, pax: { uid: '3000000', gid: '3000001', mtime: '1046660583.25' } },
      { name: 'd/', type: 'directory', pax: { uid: '7', gid: '8', mtime: '1046660583.25' } },
      { name: 'p', type: 'fifo', pax: { uid: '3000000', gid: '9', mtime: '1046660583.25' } },
    ]);
    const st = await lstat(join(dest, 'suid'));
    expect([st.uid, st.gid, st.mode & 0o7777, st.mtime]).toEqual([3000000, 3000001, 0o4755, mtime]);
    const d = await lstat(join(dest, 'd'));
    expect([d.uid, d.gid, d.mtime]).toEqual([7, 8, mtime]);
    const p = await lstat(join(dest, 'p'));
    expect([p.isFIFO(), p.uid, p.gid, p.mtime]).toEqual([true, 3000000, 9, mtime]);
  });

  it('makes nodes with the exact ids and mode the layer gives, refuses numbers it cannot give them', async () => {
    await apply([{ name: 'big', type: 'fifo', mode: 0o640, pax: { uid: '300000', gid: '300001' } }]);
    const big = await lstat(join(dest, 'big'));
    expect([big.uid, big.gid, big.mode & 0o7777]).toEqual([300000, 300001, 0o640]);
    // tar-stream's packer writes mode 0 as 0644: the field is set by hand
    const tar = await tarOf([{ name: 'closed', type: 'fifo' }, { name: 'ln', type: 'link', linkname: 'closed' }]);
    tar.write('000000 \0', 100, 'latin1');
    await unpackLayer(Readable.from([retype(tar, 0, '6')]), dest);
    for (const name of ['closed', 'ln']) expect((await lstat(join(dest, name))).mode & 0o7777, name).toBe(0);
    // a minor of 300000, in base-256 (the packer cannot write it)
    const dev = await tarOf([{ name: 'c', type: 'character-device', devmajor: 10, devminor: 1 }]);
    Buffer.from([0x80, 0, 0, 0, 0, 0x04, 0x93, 0xe0]).copy(dev, 337);
    await expect(unpackLayer(Readable.from([retype(dev, 0, '3')]), dest)).rejects.toEqual(kind('invalid_argument'));
  });

  it('an empty pax uid, gid or mtime means the ustar field, as in Go and GNU tar', async () => {
    await apply([{ name: 'f', content: 'x', uid: 12, gid: 13, pax: { uid: '', gid: '', mtime: '' } }]);
    const st = await lstat(join(dest, 'f'));
    expect([st.uid, st.gid]).toEqual([12, 13]);
  });

  it('refuses a binary (base-256) uid that is no uid, as it does from pax', async () => {
    const tar = await tarOf([{ name: 'f', content: 'x', mode: 0o4755 }]);
    Buffer.from([0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).copy(tar, 108);
    retype(tar, 0, '0');
    await expect(unpackLayer(Readable.from([tar]), dest)).rejects.toEqual(kind('invalid_argument'));
  });

  it('refuses a pax uid, gid or mtime that is not a number', async () => {
    const bad: Record<string, string>[] = [{ uid: '-1' }, { gid: '99999999999' }, { uid: '1e3' }, { mtime: 'soon' }];
    for (const pax of bad) {
      await expect(apply([{ name: 'f', content: 'x', pax }]), JSON.stringify(pax)).rejects.toEqual(kind('invalid_argument'));
    }
  });

  it('keeps the mode, owner and mtime of fifos and device nodes', async () => {
    const mtime = new Date('2001-01-01T00:00:00Z');
    await apply([
      { name: 'p', type: 'fifo', mode: 0o640, uid: 5, gid: 6, mtime },
      { name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, uid: 0, gid: 0, mtime },
      { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660, uid: 0, gid: 6, mtime },
    ]);
    const p = await lstat(join(dest, 'p'));
    expect([p.isFIFO(), p.mode & 0o7777, p.uid, p.gid, p.mtime]).toEqual([true, 0o640, 5, 6, mtime]);
    const n = await lstat(join(dest, 'null'));
    expect([n.isCharacterDevice(), n.rdev, n.mode & 0o7777, n.mtime]).toEqual([true, (1 << 8) | 3, 0o666, mtime]);
    const b = await lstat(join(dest, 'sda'));
    expect([b.isBlockDevice(), b.rdev, b.gid, b.mtime]).toEqual([true, 8 << 8, 6, mtime]);
  });

  it('a hardlink never reaches a fifo whose directory the layer has since replaced', async () => {
    await expect(apply([{ name: 'd/p', type: 'fifo' }, { name: 'd', content: 'a file' }, { name: 'h', type: 'link', linkname: 'd/p' }])).rejects.toEqual(kind('invalid_argument'));
    await rm(dest, { recursive: true });
    await mkdir(dest);
    await expect(apply([{ name: 'd/p', type: 'fifo' }, { name: 'd', content: 'a file' }, { name: 'd/', type: 'directory' }, { name: 'h', type: 'link', linkname: 'd/p' }])).rejects.toEqual(kind('invalid_argument'));
  });

  it('an old-style directory (a file entry whose name ends in "/") is a directory', async () => {
    const tar = retype(await tarOf([{ name: 'old/', type: 'directory', mode: 0o711 }]), 0, 0);
    await unpackLayer(Readable.from([tar]), dest);
    const st = await lstat(join(dest, 'old'));
    expect([st.isDirectory(), st.mode & 0o7777]).toEqual([true, 0o711]);
  });

  it('refuses entry types it cannot apply faithfully (GNU sparse, dumpdir, pax sparse) instead of writing them as files', async () => {
    for (const flag of ['S', 'D', 'M']) {
      const tar = retype(await tarOf([{ name: 'f', content: 'x' }]), 0, flag);
      await expect(unpackLayer(Readable.from([tar]), dest), flag).rejects.toEqual(kind('invalid_argument'));
    }
    await expect(apply([{ name: 'f', content: 'x', pax: { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.name': 'f', 'GNU.sparse.realsize': '1048576' } }])).rejects.toEqual(kind('invalid_argument'));
  });

  it('refuses names that are not UTF-8 rather than letting two of them collide', async () => {
    const tar = await tarOf([{ name: 'a_', content: 'one' }, { name: 'b_', content: 'two' }]);
    tar[1] = 0xff; // "a\xff"
    tar[512 + 512 + 1] = 0xfe; // "b\xfe", the next header (after one block of content)
    retype(tar, 0, '0');
    retype(tar, 1024, '0');
    await expect(unpackLayer(Readable.from([tar]), dest)).rejects.toEqual(kind('invalid_argument'));
  });

  it('keeps no more than the xattr values of a layer in memory, whatever the chunks they came in', async () => {
    // each header with an xattr sits in its own chunk of the decompressed stream: keeping a slice of the
    // value kept the whole chunk (the layer, in the end) until the layer was done
    // built as a gzip stream of one shared zero buffer: the test itself keeps ~1 MB, not the 180 MB layer
    const zeros = Buffer.alloc(300_000);
    const pack = tarPack();
    const gz = pack.pipe(createGzip({ level: 1 }));
    const compressed: Buffer[] = [];
    gz.on('data', (c: Buffer) => compressed.push(c));
    const done = new Promise((resolve) => gz.on('end', resolve));
    for (let i = 0; i < 600; i++) pack.entry({ name: `f${i}`, size: zeros.length, pax: { 'SCHILY.xattr.user.a': 'x' } }, zeros);
    pack.finalize();
    await done;
    const before = process.memoryUsage().arrayBuffers;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 5);
    try {
      await unpackLayer(Readable.from(compressed), dest);
    } finally {
      clearInterval(sampler);
    }
    expect(peak - before).toBeLessThan(64 << 20);
  });
});

describe('failures say what kind they are and release what they hold', () => {
  it('nothing is written into the layer after the unpack has failed', async () => {
    const files = 6_000;
    const entries: LayerEntry[] = [{ name: 'big/', type: 'directory' }];
    for (let i = 0; i < files; i++) entries.push({ name: `big/f${i}`, content: '' });
    entries.push({ name: 'big', content: 'replaced' }, { name: 'after', content: 'x' });
    const tar = await tarOf(entries);
    let pushed = false;
    const body = new Readable({ read() { if (!pushed) { pushed = true; this.push(tar.subarray(0, tar.length - 2048)); } } });
    const result = unpackLayer(body, dest);
    result.catch(() => undefined);
    // the body fails while the entry that replaces big/ is removing that tree
    while (!existsSync(join(dest, `big/f${files - 1}`))) await new Promise((r) => setTimeout(r, 1));
    const sample = Array.from({ length: 100 }, (_, i) => join(dest, `big/f${i * 100}`));
    while (sample.every((p) => existsSync(p))) await nextTurn();
    body.destroy(Object.assign(new Error('read failed'), { code: 'EIO' }));
    await expect(result).rejects.toEqual(expect.objectContaining({ kind: 'internal' }));
    // looked at synchronously: a listing that takes its time would race the very writes it looks for
    const big = () => {
      const st = lstatSync(join(dest, 'big'), { throwIfNoEntry: false });
      return st ? (st.isDirectory() ? 'directory' : `file of ${st.size} bytes`) : 'nothing';
    };
    const atFailure = big();
    await new Promise((r) => setTimeout(r, 1000));
    expect(big()).toBe(atFailure);
  });

  it('a name the file system cannot take is a bad layer, not an internal error', async () => {
    await expect(apply([{ name: 'n'.repeat(300), content: '' }])).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
    await expect(apply([{ name: 's', type: 'symlink', linkname: '' }])).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
  });

  it('a zstd layer whose blob cannot be read is INTERNAL', async () => {
    const l = layerFromTar(await tarOf([{ name: 'a', content: Buffer.alloc(1 << 20, 7) }]), 'zstd');
    let sent = false;
    const body = new Readable({ read() { if (sent) this.destroy(Object.assign(new Error('read failed'), { code: 'EIO' })); else { sent = true; this.push(l.data.subarray(0, 64)); } } });
    await expect(unpackLayer(body, dest, l.diffId, l.mediaType)).rejects.toEqual(expect.objectContaining({ kind: 'internal' }));
  });

  it('a failed unpack closes the layer blob it was reading', async () => {
    const tar = await tarOf([{ name: 'a', content: 'a' }, { name: 'b', type: 'link', linkname: 'missing' }, { name: 'c', content: 'x'.repeat(4 << 20) }]);
    const blobPath = join(base, 'blob');
    await writeFile(blobPath, tar);
    const openOnBlob = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === blobPath; } catch { return false; } });
    await expect(unpackLayerFile(blobPath, dest)).rejects.toEqual(expect.objectContaining({ kind: 'invalid_argument' }));
    // closing is asynchronous: give it a moment, never forever
    for (let i = 0; i < 50 && openOnBlob().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(openOnBlob()).toEqual([]);
  });

  it('a full disk is RESOURCE_EXHAUSTED, and a blob that cannot be read is INTERNAL, not a bad layer', async () => {
    const small = join(base, 'small');
    await mkdir(small);
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]).status).toBe(0);
    try {
      const tar = await tarOf([{ name: 'big', content: Buffer.alloc(2 << 20, 1) }]);
      await expect(unpackLayer(Readable.from([tar]), small)).rejects.toEqual(expect.objectContaining({ kind: 'resource_exhausted' }));
    } finally {
      spawnSync('umount', [small]);
    }
    const eio = () => Object.assign(new Error('read failed'), { code: 'EIO', syscall: 'read' });
    const failsAtOnce = new Readable({ read() { this.destroy(eio()); } });
    await expect(unpackLayer(failsAtOnce, dest)).rejects.toEqual(expect.objectContaining({ kind: 'internal' }));
    const tar = await tarOf([{ name: 'a', content: 'x'.repeat(100_000) }]);
    let sent = false;
    const failsLater = new Readable({ read() { if (sent) this.destroy(eio()); else { sent = true; this.push(tar.subarray(0, 2048)); } } });
    await expect(unpackLayer(failsLater, join(base, 'layer'))).rejects.toEqual(expect.objectContaining({ kind: 'internal' }));
  });
});

describe('unpacking a blob while it downloads', () => {
  async function layerFile(n: number) {
    const tar = await tarOf(Array.from({ length: n }, (_, i) => ({ name: `f${i}`, content: `file ${i}`.repeat(50) })));
    return layerFromTar(tar, 'gzip');
  }

  it('follows the file as bytes are announced, across the rename that commits it', async () => {
    const l = await layerFile(3000);
    const tmp = join(base, 'ingest');
    const committed = join(base, 'committed');
    await writeFile(tmp, '');
    const live = unpackGrowingFile(tmp, committed, l.size, dest, l.diffId, l.mediaType);
    const step = 64 * 1024;
    for (let off = 0; off < l.size; off += step) {
      await appendFile(tmp, l.data.subarray(off, off + step));
      live.available(Math.min(off + step, l.size));
      await nextTurn();
      if (off === step * 2) await rename(tmp, committed);
    }
    const res = await live.result;
    expect(res.diffId).toBe(l.diffId);
    expect(await readFile(join(dest, 'f2999'), 'utf8')).toBe('file 2999'.repeat(50));
  });

  it('an abort ends it at once, and unpacks waiting for bytes do not hold up others', async () => {
    // incompressible: the blob spans several 512 KiB chunks, and each stalled unpack has applied its first
    const l = layerFromTar(await tarOf([{ name: 'noise', content: randomBytes(3 << 20) }]), 'gzip');
    const firstChunk = 512 * 1024;
    const stalled = [0, 1, 2].map((i) => {
      const tmp = join(base, `stalled${i}`);
      return { tmp, dest: join(base, `sdest${i}`) };
    });
    for (const s of stalled) {
      await writeFile(s.tmp, l.data.subarray(0, firstChunk + 100));
      await mkdir(s.dest);
    }
    const lives = stalled.map((s) => unpackGrowingFile(s.tmp, `${s.tmp}.done`, l.size, s.dest, l.diffId, l.mediaType));
    lives.forEach((lv) => lv.available(firstChunk + 100));
    // each has read its first chunk and is waiting for the next
    for (let i = 0; i < 50 && !(await Promise.all(stalled.map((s) => readdir(s.dest)))).every((d) => d.includes('noise')); i++) await new Promise((r) => setTimeout(r, 20));
    expect((await Promise.all(stalled.map((s) => readdir(s.dest)))).every((d) => d.includes('noise'))).toBe(true);
    const blobPath = join(base, 'complete');
    await writeFile(blobPath, l.data);
    // with slots held by stalled downloads this would wait forever
    expect((await unpackLayerFile(blobPath, dest, l.diffId, l.mediaType)).diffId).toBe(l.diffId);
    for (const lv of lives) lv.abort();
    for (const lv of lives) await expect(lv.result).rejects.toEqual(expect.objectContaining({ kind: 'cancelled' }));
  });
});
