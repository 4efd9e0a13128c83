// Applies one layer tarball to an empty directory (a snapshot's `fs`), in overlayfs's format so snapshots
// stack with a plain overlay mount:
//   - OCI whiteouts `.wh.<name>` become overlay whiteouts (a 0/0 character device), `.wh..wh..opq` marks its
//     directory opaque (xattr trusted.overlay.opaque=y);
//   - regular files, dirs, symlinks, hardlinks, fifos, device nodes (as root; EPERM is tolerated), modes,
//     owners, mtimes and xattrs (pax SCHILY.xattr.*) are kept;
//   - gzip, zstd and plain tar are recognised by their magic bytes, whatever the media type says;
//   - nothing is ever written outside `dest`: names are cleaned as if rooted at "/" (so `../../x` and `/x`
//     land at `dest/x`), a path through a symlink created by this layer is refused, and hardlinks may only
//     point at files inside the layer;
//   - the uncompressed stream is hashed and must equal the config's diff_id.
// Node has no mknod or setxattr, so those few operations are batched into one `sh` run per layer.
import { createGunzip } from 'node:zlib';
import { spawn } from 'node:child_process';
import { open, mkdir, symlink, link, lstat, rm, chmod, lchown, lutimes } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header as Headers } from 'tar-stream';
import { invalidArgument, errnoCode, internal } from '../errors.js';
import { run } from '../util/exec.js';

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';
const IS_ROOT = process.getuid?.() === 0;

export interface UnpackResult {
  /** sha256 of the uncompressed tar (the layer's diff_id). */
  diffId: string;
  /** Bytes of regular file content written. */
  size: number;
  /** Device nodes that could not be created (EPERM), for the log. */
  skippedDevices: string[];
}

/** Cleans a tar path lexically as if rooted at "/": no "..", no absolute, no empty or "." parts. */
export function cleanPath(name: string): string[] {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out;
}

/** Sniffs the first bytes and returns the decompressed stream. */
async function decompress(body: Readable): Promise<{ stream: Readable; done: Promise<void> }> {
  const head = await firstChunk(body);
  const src = new PassThrough();
  src.write(head);
  body.pipe(src);
  body.once('error', (e) => src.destroy(e));
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = createGunzip();
    src.pipe(gunzip);
    src.once('error', (e) => gunzip.destroy(e));
    return { stream: gunzip, done: Promise.resolve() };
  }
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
    // Node 20's zlib has no zstd; Debian's zstd streams at ~230 MB/s
    const child = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d.slice(0, 500)));
    src.pipe(child.stdin);
    child.stdin.on('error', () => undefined);
    src.once('error', () => child.kill('SIGKILL'));
    const done = new Promise<void>((resolve, reject) => {
      child.once('error', (e) => reject(internal(`cannot run zstd: ${e.message}`)));
      child.once('exit', (code) => (code === 0 ? resolve() : reject(invalidArgument(`zstd layer could not be decompressed: ${err.trim() || `exit ${code}`}`))));
    });
    done.catch(() => undefined);
    return { stream: child.stdout, done };
  }
  return { stream: src, done: Promise.resolve() };
}

function firstChunk(body: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const onReadable = () => {
      const chunk = body.read() as Buffer | null;
      if (chunk === null) return;
      cleanup();
      resolve(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.alloc(0));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const cleanup = () => {
      body.off('readable', onReadable);
      body.off('end', onEnd);
      body.off('error', onError);
    };
    body.on('readable', onReadable);
    body.once('end', onEnd);
    body.once('error', onError);
  });
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

class LayerWriter {
  /** Directories inside dest known to be real directories created or checked by us (relative paths). */
  private readonly safeDirs = new Set<string>(['']);
  private readonly dirTimes: { path: string; mtime: Date }[] = [];
  /** Shell lines for mknod/setfattr, run once at the end. `F` lines must succeed, `D` lines may fail. */
  private readonly special: string[] = [];
  private readonly whiteouts: string[] = [];
  readonly skippedDevices: string[] = [];
  size = 0;

  constructor(private readonly dest: string) {}

  private abs(rel: string): string {
    return rel === '' ? this.dest : join(this.dest, rel);
  }

  /** Makes sure every parent of `parts` is a real directory of this layer; refuses symlinked parents. */
  private async ensureParents(parts: string[], original: string): Promise<void> {
    let rel = '';
    for (const p of parts.slice(0, -1)) {
      rel = rel === '' ? p : `${rel}/${p}`;
      if (this.safeDirs.has(rel)) continue;
      try {
        const st = await lstat(this.abs(rel));
        if (st.isSymbolicLink()) throw invalidArgument(`layer entry "${original}" goes through the symlink "${rel}": refused (it could write outside the layer)`);
        if (!st.isDirectory()) await rm(this.abs(rel), { force: true });
        else {
          this.safeDirs.add(rel);
          continue;
        }
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
      // parent with no tar entry of its own: created with docker's defaults
      await mkdir(this.abs(rel), { mode: 0o755 });
      this.safeDirs.add(rel);
    }
  }

  /** Removes whatever is at rel unless both are directories. */
  private async clearFor(rel: string, isDir: boolean): Promise<boolean> {
    try {
      const st = await lstat(this.abs(rel));
      if (isDir && st.isDirectory()) return true;
      await rm(this.abs(rel), { recursive: true, force: true });
      for (const d of this.safeDirs) if (d === rel || d.startsWith(`${rel}/`)) this.safeDirs.delete(d);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    return false;
  }

  private async meta(path: string, h: Headers, isLink: boolean): Promise<void> {
    if (IS_ROOT) await lchown(path, h.uid ?? 0, h.gid ?? 0);
    if (!isLink) await chmod(path, (h.mode ?? 0o644) & 0o7777);
    const mtime = h.mtime ?? new Date(0);
    await lutimes(path, mtime, mtime);
  }

  private xattrs(rel: string, h: Headers): void {
    const pax = (h as Headers & { pax?: Record<string, string> }).pax;
    if (!pax) return;
    for (const [k, v] of Object.entries(pax)) {
      if (!k.startsWith('SCHILY.xattr.')) continue;
      const name = k.slice('SCHILY.xattr.'.length);
      // overlay's own xattrs inside a layer would let it forge whiteouts/redirects: never applied
      if (name.startsWith('trusted.overlay.')) continue;
      this.special.push(`setfattr -h -n ${shq(name)} -v 0x${Buffer.from(v, 'latin1').toString('hex')} -- ${shq(this.abs(rel))} 2>/dev/null || true`);
    }
  }

  async entry(h: Headers, body: Readable): Promise<void> {
    const parts = cleanPath(h.name);
    if (parts.length === 0) {
      // the layer's root itself ("./"): nothing to create
      body.resume();
      return;
    }
    await this.ensureParents(parts, h.name);
    const base = parts[parts.length - 1];
    const parentRel = parts.slice(0, -1).join('/');
    if (base === OPAQUE) {
      body.resume();
      this.special.push(`setfattr -n trusted.overlay.opaque -v y -- ${shq(this.abs(parentRel))} || echo FAIL ${shq(parentRel)}`);
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      body.resume();
      const rel = [...parts.slice(0, -1), base.slice(WHITEOUT_PREFIX.length)].join('/');
      if (base.length === WHITEOUT_PREFIX.length) return;
      await this.clearFor(rel, false);
      this.whiteouts.push(rel);
      return;
    }
    const rel = parts.join('/');
    const path = this.abs(rel);
    switch (h.type) {
      case 'directory': {
        body.resume();
        if (!(await this.clearFor(rel, true))) await mkdir(path, { mode: 0o700 });
        this.safeDirs.add(rel);
        await this.meta(path, h, false);
        this.dirTimes.push({ path, mtime: h.mtime ?? new Date(0) });
        break;
      }
      case 'file':
      case 'contiguous-file':
      case null:
      case undefined: {
        await this.clearFor(rel, false);
        const fh = await open(path, 'wx', 0o600);
        try {
          for await (const chunk of body) {
            const b = chunk as Buffer;
            this.size += b.length;
            await fh.write(b);
          }
          if (IS_ROOT) await fh.chown(h.uid ?? 0, h.gid ?? 0);
          await fh.chmod((h.mode ?? 0o644) & 0o7777);
          const mtime = h.mtime ?? new Date(0);
          await fh.utimes(mtime, mtime);
        } finally {
          await fh.close();
        }
        break;
      }
      case 'symlink': {
        body.resume();
        await this.clearFor(rel, false);
        // the target is stored as-is: it is only resolved inside the container's mount namespace
        await symlink(h.linkname ?? '', path);
        await this.meta(path, h, true);
        break;
      }
      case 'link': {
        body.resume();
        const target = cleanPath(h.linkname ?? '');
        if (target.length === 0) throw invalidArgument(`layer hardlink "${h.name}" has an empty target`);
        await this.ensureParents(target, h.linkname ?? '');
        const tpath = this.abs(target.join('/'));
        let st;
        try {
          st = await lstat(tpath);
        } catch {
          throw invalidArgument(`layer hardlink "${h.name}" points at "${h.linkname}", which is not in this layer`);
        }
        if (st.isDirectory()) throw invalidArgument(`layer hardlink "${h.name}" points at a directory`);
        if (tpath === path) break;
        await this.clearFor(rel, false);
        await link(tpath, path);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        body.resume();
        await this.clearFor(rel, false);
        const kind = h.type === 'fifo' ? 'p' : h.type === 'block-device' ? `b ${h.devmajor ?? 0} ${h.devminor ?? 0}` : `c ${h.devmajor ?? 0} ${h.devminor ?? 0}`;
        const mode = ((h.mode ?? 0o644) & 0o7777).toString(8);
        this.special.push(
          `if mknod -m ${mode} -- ${shq(path)} ${kind} 2>/dev/null; then chown -h ${h.uid ?? 0}:${h.gid ?? 0} -- ${shq(path)} 2>/dev/null; else echo SKIP ${shq(rel)}; fi`,
        );
        break;
      }
      default:
        // pax global headers, GNU sparse and friends: ignored, as containerd does
        body.resume();
        return;
    }
    this.xattrs(rel, h);
  }

  async finish(): Promise<void> {
    for (const rel of this.whiteouts) {
      // a later entry of the same layer may have recreated the path: then it is not hidden
      this.special.push(`[ -e ${shq(this.abs(rel))} ] || [ -L ${shq(this.abs(rel))} ] || mknod -- ${shq(this.abs(rel))} c 0 0 || echo FAIL ${shq(rel)}`);
    }
    if (this.special.length > 0) {
      const res = await run('sh', ['-s'], { input: this.special.join('\n') + '\n', timeoutMs: 120_000 });
      for (const line of res.stdout.split('\n')) {
        if (line.startsWith('SKIP ')) this.skippedDevices.push(line.slice(5));
        if (line.startsWith('FAIL ')) throw internal(`could not create the overlay whiteout for "${line.slice(5)}": ${res.stderr.trim().slice(0, 300)}`);
      }
    }
    // directory mtimes last: creating their children changed them
    for (const d of this.dirTimes.reverse()) await lutimes(d.path, d.mtime, d.mtime).catch(() => undefined);
  }
}

/** Unpacks a (possibly compressed) layer stream into the empty directory `dest`. */
export async function unpackLayer(body: Readable, dest: string, expectedDiffId?: string): Promise<UnpackResult> {
  const { stream, done } = await decompress(body);
  const hash = createHash('sha256');
  const hasher = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const writer = new LayerWriter(dest);
  const ex = tarExtract();
  const consume = (async () => {
    for await (const entry of ex) {
      await writer.entry(entry.header, entry as unknown as Readable);
    }
  })();
  // hash everything, including the tar padding after the last entry
  const piped = pipeline(stream, hasher, ex);
  try {
    await Promise.all([piped, consume, done]);
  } catch (err) {
    stream.destroy();
    ex.destroy();
    if (err instanceof Error && !(err as { kind?: string }).kind) throw invalidArgument(`layer is not a valid tar stream: ${err.message}`, {}, err);
    throw err;
  }
  await writer.finish();
  const diffId = `sha256:${hash.digest('hex')}`;
  if (expectedDiffId && diffId !== expectedDiffId) {
    throw invalidArgument(`layer content has diff_id ${diffId}, the image config says ${expectedDiffId}`);
  }
  return { diffId, size: writer.size, skippedDevices: writer.skippedDevices };
}
