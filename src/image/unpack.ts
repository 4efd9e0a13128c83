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
// File system calls are synchronous: a layer is thousands of tiny files, and an async call per step (open,
// write, chown, chmod, utimes, close) costs a thread-pool round trip each, which dominated pull time. Each
// call is short, and the tar stream yields to the event loop between chunks (see withUnpackSlot).
import { createGunzip } from 'node:zlib';
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { createReadStream, openSync, writeSync, closeSync, fchownSync, fchmodSync, futimesSync, mkdirSync, symlinkSync, linkSync, lstatSync, rmSync, chmodSync, lchownSync, lutimesSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header as Headers } from 'tar-stream';
import { invalidArgument, errnoCode, internal } from '../errors.js';
import { run } from '../util/exec.js';
import { streamed } from '../util/gc.js';

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

/**
 * Sniffs the first bytes and returns the decompressed stream. The magic bytes decide, as in containerd: a
 * gzip layer typed as plain tar, or zstd typed as gzip, still unpacks. A layer typed zstd (OCI `+zstd` or
 * Docker's `.tar.zstd`) must start with zstd's magic: it is refused otherwise.
 */
async function decompress(body: Readable, mediaType?: string): Promise<{ stream: Readable; done: Promise<void> }> {
  const head = await firstChunk(body);
  const isZstd = head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528;
  if (mediaType && /[+.]zstd$/.test(mediaType) && !isZstd) {
    body.destroy();
    throw invalidArgument(`layer is typed ${mediaType} but its data does not start with zstd's magic bytes (it starts with 0x${head.subarray(0, 4).toString('hex')})`);
  }
  const src = new PassThrough();
  src.write(head);
  body.pipe(src);
  body.once('error', (e) => src.destroy(e));
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    // big output chunks: each one is a thread-pool round trip, 16 KiB ones made inflating latency-bound
    const gunzip = createGunzip({ chunkSize: 256 * 1024 });
    src.pipe(gunzip);
    src.once('error', (e) => gunzip.destroy(e));
    return { stream: gunzip, done: Promise.resolve() };
  }
  if (isZstd) {
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
  private readonly dirTimes: { rel: string; mtime: Date }[] = [];
  /**
   * Shell lines for mknod/setfattr, run once at the end. `dir` must still be a real directory of the layer
   * then (a later entry may have replaced it, or a parent, with a symlink): otherwise the line is dropped.
   */
  private readonly special: { dir: string; line: string }[] = [];
  /** Paths whited out by this layer; applied at the end since they only hide what lower layers have. */
  private readonly whiteouts = new Set<string>();
  readonly skippedDevices: string[] = [];
  size = 0;

  constructor(private readonly dest: string) {}

  private abs(rel: string): string {
    return rel === '' ? this.dest : join(this.dest, rel);
  }

  /** Makes sure every parent of `parts` is a real directory of this layer; refuses symlinked parents. */
  private ensureParents(parts: string[], original: string): void {
    let rel = '';
    for (const p of parts.slice(0, -1)) {
      rel = rel === '' ? p : `${rel}/${p}`;
      if (this.safeDirs.has(rel)) continue;
      const st = lstatOrUndefined(this.abs(rel));
      if (st?.isSymbolicLink()) throw invalidArgument(`layer entry "${original}" goes through the symlink "${rel}": refused (it could write outside the layer)`);
      if (st?.isDirectory()) {
        this.safeDirs.add(rel);
        continue;
      }
      if (st) rmSync(this.abs(rel), { force: true });
      // parent with no tar entry of its own: created with docker's defaults
      mkdirSync(this.abs(rel), { mode: 0o755 });
      this.safeDirs.add(rel);
    }
  }

  /** Removes whatever is at rel unless both are directories. */
  private clearFor(rel: string, isDir: boolean): boolean {
    const st = lstatOrUndefined(this.abs(rel));
    if (!st) return false;
    if (isDir && st.isDirectory()) return true;
    rmSync(this.abs(rel), { recursive: true, force: true });
    for (const d of this.safeDirs) if (d === rel || d.startsWith(`${rel}/`)) this.safeDirs.delete(d);
    return false;
  }

  private meta(path: string, h: Headers, isLink: boolean): void {
    if (IS_ROOT) lchownSync(path, h.uid ?? 0, h.gid ?? 0);
    if (!isLink) chmodSync(path, (h.mode ?? 0o644) & 0o7777);
    const mtime = h.mtime ?? new Date(0);
    lutimesSync(path, mtime, mtime);
  }

  /** Creates a regular file from the entry's body; EEXIST (an earlier entry of the layer) is replaced. */
  private async writeFile(rel: string, h: Headers, body: Readable): Promise<void> {
    const path = this.abs(rel);
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      this.clearFor(rel, false);
      fd = openSync(path, 'wx', 0o600);
    }
    try {
      for await (const chunk of body) {
        const b = chunk as Buffer;
        this.size += b.length;
        for (let off = 0; off < b.length; ) off += writeSync(fd, b, off);
      }
      if (IS_ROOT) fchownSync(fd, h.uid ?? 0, h.gid ?? 0);
      // after chown, which clears set-id bits
      fchmodSync(fd, (h.mode ?? 0o644) & 0o7777);
      const mtime = h.mtime ?? new Date(0);
      futimesSync(fd, mtime, mtime);
    } finally {
      closeSync(fd);
    }
  }

  private xattrs(rel: string, h: Headers): void {
    const pax = (h as Headers & { pax?: Record<string, string> }).pax;
    if (!pax) return;
    for (const [k, v] of Object.entries(pax)) {
      if (!k.startsWith('SCHILY.xattr.')) continue;
      const name = k.slice('SCHILY.xattr.'.length);
      // overlay's own xattrs inside a layer would let it forge whiteouts/redirects: never applied
      if (name.startsWith('trusted.overlay.')) continue;
      this.special.push({ dir: parentOf(rel), line: `setfattr -h -n ${shq(name)} -v 0x${Buffer.from(v, 'latin1').toString('hex')} -- ${shq(this.abs(rel))} 2>/dev/null || true` });
    }
  }

  async entry(h: Headers, body: Readable): Promise<void> {
    const parts = cleanPath(h.name);
    if (parts.length === 0) {
      // the layer's root itself ("./"): nothing to create
      body.resume();
      return;
    }
    this.ensureParents(parts, h.name);
    const base = parts[parts.length - 1];
    const parentRel = parts.slice(0, -1).join('/');
    if (base === OPAQUE) {
      body.resume();
      this.special.push({ dir: parentRel, line: this.opaqueLine(parentRel) });
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      body.resume();
      // Same-layer entries are never hidden by a whiteout (it applies to lower layers only), whatever the
      // order of entries: so nothing is removed here, see finish().
      if (base.length > WHITEOUT_PREFIX.length) this.whiteouts.add([...parts.slice(0, -1), base.slice(WHITEOUT_PREFIX.length)].join('/'));
      return;
    }
    const rel = parts.join('/');
    const path = this.abs(rel);
    switch (h.type) {
      case 'directory': {
        body.resume();
        // try first, look only on EEXIST: most entries are new paths
        if (!tryCreate(() => mkdirSync(path, { mode: 0o700 })) && !this.clearFor(rel, true)) mkdirSync(path, { mode: 0o700 });
        this.safeDirs.add(rel);
        this.meta(path, h, false);
        this.dirTimes.push({ rel, mtime: h.mtime ?? new Date(0) });
        break;
      }
      case 'file':
      case 'contiguous-file':
      case null:
      case undefined: {
        await this.writeFile(rel, h, body);
        break;
      }
      case 'symlink': {
        body.resume();
        // the target is stored as-is: it is only resolved inside the container's mount namespace
        if (!tryCreate(() => symlinkSync(h.linkname ?? '', path))) {
          this.clearFor(rel, false);
          symlinkSync(h.linkname ?? '', path);
        }
        this.meta(path, h, true);
        break;
      }
      case 'link': {
        body.resume();
        const target = cleanPath(h.linkname ?? '');
        if (target.length === 0) throw invalidArgument(`layer hardlink "${h.name}" has an empty target`);
        this.ensureParents(target, h.linkname ?? '');
        const tpath = this.abs(target.join('/'));
        const st = lstatOrUndefined(tpath);
        if (!st) throw invalidArgument(`layer hardlink "${h.name}" points at "${h.linkname}", which is not in this layer`);
        if (st.isDirectory()) throw invalidArgument(`layer hardlink "${h.name}" points at a directory`);
        if (tpath === path) break;
        this.clearFor(rel, false);
        linkSync(tpath, path);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        body.resume();
        this.clearFor(rel, false);
        const kind = h.type === 'fifo' ? 'p' : h.type === 'block-device' ? `b ${h.devmajor ?? 0} ${h.devminor ?? 0}` : `c ${h.devmajor ?? 0} ${h.devminor ?? 0}`;
        const mode = ((h.mode ?? 0o644) & 0o7777).toString(8);
        this.special.push({
          dir: parentRel,
          line: `if mknod -m ${mode} -- ${shq(path)} ${kind} 2>/dev/null; then chown -h ${h.uid ?? 0}:${h.gid ?? 0} -- ${shq(path)} 2>/dev/null; else echo SKIP ${shq(rel)}; fi`,
        });
        break;
      }
      default:
        // pax global headers, GNU sparse and friends: ignored, as containerd does
        body.resume();
        return;
    }
    this.xattrs(rel, h);
  }

  private opaqueLine(rel: string): string {
    return `setfattr -n trusted.overlay.opaque -v y -- ${shq(this.abs(rel))} || echo FAIL ${shq(rel)}`;
  }

  /** Whether rel and all its parents are still real directories (not symlinks) of this layer. */
  private realDir(rel: string, cache: Map<string, boolean>): boolean {
    let cur = '';
    for (const p of rel === '' ? [] : rel.split('/')) {
      cur = cur === '' ? p : `${cur}/${p}`;
      let ok = cache.get(cur);
      if (ok === undefined) {
        ok = lstatOrUndefined(this.abs(cur))?.isDirectory() === true;
        cache.set(cur, ok);
      }
      if (!ok) return false;
    }
    return true;
  }

  async finish(): Promise<void> {
    const cache = new Map<string, boolean>();
    const lines: string[] = [];
    for (const op of this.special) if (this.realDir(op.dir, cache)) lines.push(op.line);
    for (const rel of this.whiteouts) {
      if (!this.realDir(parentOf(rel), cache)) continue;
      const st = lstatOrUndefined(this.abs(rel));
      // nothing of this layer there: an overlay whiteout; a directory of this layer replaces the lower one
      // entirely, so it is opaque; a file of this layer simply replaces the lower entry
      if (!st) lines.push(`mknod -- ${shq(this.abs(rel))} c 0 0 || echo FAIL ${shq(rel)}`);
      else if (st.isDirectory()) lines.push(this.opaqueLine(rel));
    }
    if (lines.length > 0) {
      const res = await run('sh', ['-s'], { input: lines.join('\n') + '\n', timeoutMs: 120_000 });
      for (const line of res.stdout.split('\n')) {
        if (line.startsWith('SKIP ')) this.skippedDevices.push(line.slice(5));
        if (line.startsWith('FAIL ')) throw internal(`could not create the overlay whiteout or opaque marker for "${line.slice(5)}": ${res.stderr.trim().slice(0, 300)}`);
      }
    }
    // directory mtimes last: creating their children changed them
    for (const d of this.dirTimes.reverse()) {
      if (this.realDir(d.rel, cache)) lutimesSync(this.abs(d.rel), d.mtime, d.mtime);
    }
  }
}

/** Runs a create call; false when something already exists at the path (EEXIST), other errors thrown. */
function tryCreate(create: () => void): boolean {
  try {
    create();
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    // no exception for the common "not there yet": building one per entry showed in profiles
    return lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/** Unpacks a (possibly compressed) layer stream into the empty directory `dest`. */
export async function unpackLayer(body: Readable, dest: string, expectedDiffId?: string, mediaType?: string): Promise<UnpackResult> {
  const { stream, done } = await decompress(body, mediaType);
  const hash = createHash('sha256');
  const hasher = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      streamed.add(chunk.length);
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

const CHUNK = 512 * 1024;

/** Unpacks the complete layer blob `file` into `dest`. */
export function unpackLayerFile(file: string, dest: string, expectedDiffId?: string, mediaType?: string): Promise<UnpackResult> {
  return withUnpackSlot(() => unpackLayer(createReadStream(file, { highWaterMark: CHUNK }), dest, expectedDiffId, mediaType));
}

/** An unpack that follows a blob while it is being downloaded (see unpackGrowingFile). */
export interface LiveUnpack {
  /** Says the blob's first `n` bytes are in the file. */
  available(n: number): void;
  /** Stops it (the download restarted or failed); `result` then rejects once the unpack has stopped. */
  abort(): void;
  result: Promise<UnpackResult>;
}

/**
 * Unpacks a layer blob of `size` bytes while it is still being downloaded into `file` (renamed to
 * `committed` once verified): only bytes `available()` said were written are read, then it waits for more.
 * So download and unpack overlap instead of running one after the other.
 */
export function unpackGrowingFile(file: string, committed: string, size: number, dest: string, expectedDiffId: string, mediaType?: string): LiveUnpack {
  let available = 0;
  let aborted = false;
  let wake: (() => void) | undefined;
  const result = withUnpackSlot(() => {
    if (aborted) return Promise.reject(internal('layer unpack aborted', { path: dest }));
    const body = Readable.from(growingFile(), { objectMode: false });
    return unpackLayer(body, dest, expectedDiffId, mediaType);
  });
  result.catch(() => undefined);

  async function* growingFile(): AsyncGenerator<Buffer> {
    // an unpack that waited for its slot may find the download already committed (renamed, same inode)
    const fh = await open(file, 'r').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return open(committed, 'r');
      throw err;
    });
    try {
      let pos = 0;
      while (pos < size) {
        // whole chunks only: a read per network packet's worth of bytes cost CPU and made many odd-sized Buffers
        while (available - pos < Math.min(CHUNK, size - pos) && !aborted) await new Promise<void>((r) => (wake = r));
        if (aborted) throw internal('the download restarted: unpacking again from the complete blob', { path: dest });
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, available - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) throw internal(`layer blob ended at byte ${pos} of ${size}`, { path: dest });
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  return {
    available(n) {
      available = Math.max(available, n);
      wake?.();
    },
    abort() {
      aborted = true;
      wake?.();
    },
    result,
  };
}

/**
 * Unpacks run in the daemon's own thread. They once ran in worker threads, but each worker is an isolate
 * with its own heap and malloc arena, which grew the daemon by ~50 MB during a pull; here the file system
 * calls are short (one small file each) and the tar stream yields between chunks, so other calls still get
 * answers within tens of milliseconds (bench/image-pull.bench.mjs measures it). Inflating runs on libuv's
 * thread pool either way. Two layers at a time keep the pool busy without holding more buffers than that.
 */
const MAX_UNPACKS = 2;
let activeUnpacks = 0;
const unpackQueue: (() => void)[] = [];

async function withUnpackSlot<T>(fn: () => Promise<T>): Promise<T> {
  while (activeUnpacks >= MAX_UNPACKS) await new Promise<void>((r) => unpackQueue.push(r));
  activeUnpacks++;
  try {
    return await fn();
  } finally {
    activeUnpacks--;
    unpackQueue.shift()?.();
  }
}
