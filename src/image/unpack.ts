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
// Node has no mknod or setxattr: those operations are batched at the end of a layer into `tar -x` (device
// nodes, then whiteouts) and `setfattr --restore` (xattrs, opaque markers) runs.
// Entries are read as GNU tar reads them: pax uid, gid and mtime override the ustar fields (large ids live
// only there), old-style directories (a file entry named "dir/") are directories. What cannot be applied
// faithfully is refused rather than written wrong: sparse files (GNU and pax), GNU dumpdir and other unknown
// entry types, and names that are not UTF-8 (decoded, two of them could become the same name).
// File system calls are synchronous: a layer is thousands of tiny files, and an async call per step (open,
// write, chown, chmod, utimes, close) costs a thread-pool round trip each, which dominated pull time. Each
// call is short, and the entry loop yields to the event loop every few hundred entries or 10 ms (see Turns).
// A hostile layer must not grow the daemon without bound: what is kept until the end of a layer (deferred
// xattrs and device nodes, whiteouts, directories) is charged to a per-layer budget, deferred operations are
// counted, names are capped at PATH_MAX and xattrs per entry at XATTR_SIZE_MAX.
import { createGunzip } from 'node:zlib';
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { removeTree } from '../util/fs.js';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createReadStream, openSync, writeSync, closeSync, fchownSync, fchmodSync, futimesSync, mkdirSync, symlinkSync, linkSync, lstatSync, unlinkSync, rmdirSync, chmodSync, lchownSync, lutimesSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, pack as tarPack, type Header as Headers } from 'tar-stream';
import { invalidArgument, errnoCode, internal, cancelled, fromSystemError, SkiffError, errorMessage } from '../errors.js';
import { run, type RunResult } from '../util/exec.js';
import { streamed } from '../util/gc.js';
import { Slots } from '../util/slots.js';

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';
const IS_ROOT = process.getuid?.() === 0;
/** Linux's limit for one xattr value (XATTR_SIZE_MAX); an entry's xattrs together get no more. */
export const MAX_ENTRY_XATTR_BYTES = 64 * 1024;
/** Memory a layer may keep for work deferred to its end (see LayerWriter): far above any real image's. */
const DEFERRED_BUDGET_BYTES = 32 * 1024 * 1024;
/** Rough cost of one kept record (object and Set/array slot) beyond its strings. */
const RECORD_BYTES = 64;
/** Whiteouts, opaque markers, device nodes and xattrs a layer may leave for its end (each is a syscall then). */
export const MAX_DEFERRED_OPS = 65_536;
/** Linux's PATH_MAX: a longer name could never be created, and would make path handling costly. */
const MAX_NAME_BYTES = 4096;
/**
 * A pax header's size and records. Real ones hold a path, a link target, times and a few xattrs.
 */
const MAX_PAX_BYTES = 256 * 1024;
const MAX_PAX_RECORDS = 512;
const XATTR_KEY = 'SCHILY.xattr.';

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
async function decompress(body: Readable, mediaType?: string): Promise<{ stream: Readable; done: Promise<void>; stop: () => void }> {
  const head = await firstChunk(body);
  // it may have failed or closed since its first chunk, before anyone listened (see unpackLayer's listener)
  if (body.errored) throw body.errored;
  if (body.destroyed && !body.readableEnded) throw internal('the layer blob stream closed before its end');
  const isZstd = head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528;
  if (mediaType && /[+.]zstd$/.test(mediaType) && !isZstd) {
    body.destroy();
    throw invalidArgument(`layer is typed ${mediaType} but its data does not start with zstd's magic bytes (it starts with 0x${head.subarray(0, 4).toString('hex')})`);
  }
  const src = new PassThrough();
  src.write(head);
  // pipe, not pipeline: a failure downstream must not come back as an error of the body (a read error)
  body.pipe(src);
  body.on('error', (e) => src.destroy(e));
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    // big output chunks: each one is a thread-pool round trip, 16 KiB ones made inflating latency-bound
    const gunzip = createGunzip({ chunkSize: 256 * 1024 });
    src.pipe(gunzip);
    src.once('error', (e) => gunzip.destroy(e));
    return { stream: gunzip, done: Promise.resolve(), stop: () => src.destroy() };
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
    return {
      stream: child.stdout,
      done,
      stop: () => {
        src.destroy();
        child.kill('SIGKILL');
      },
    };
  }
  return { stream: src, done: Promise.resolve(), stop: () => src.destroy() };
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

/** The xattrs of each pax header object tar-stream hands out (header.pax), as raw bytes. */
const rawXattrs = new WeakMap<object, Map<string, Buffer>>();

/** Parses pax records ("<len> key=value\n"), keeping values as bytes; refuses oversized headers. */
function paxXattrs(buf: Buffer): Map<string, Buffer> {
  if (buf.length > MAX_PAX_BYTES) throw invalidArgument(`layer has a pax header of ${buf.length} bytes (the limit is ${MAX_PAX_BYTES}): refused`);
  const out = new Map<string, Buffer>();
  let records = 0;
  for (let pos = 0; pos < buf.length; ) {
    if (++records > MAX_PAX_RECORDS) throw invalidArgument(`layer has a pax header with more than ${MAX_PAX_RECORDS} records: refused`);
    const space = buf.indexOf(0x20, pos);
    // parseInt, as tar-stream reads it ("11x" is 11): the records counted must be the ones it decodes
    const len = space < 0 ? 0 : parseInt(buf.toString('latin1', pos, space), 10);
    // malformed records: tar-stream stops at the same point, so nothing after it applies
    if (!len || len <= space - pos || pos + len > buf.length) break;
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= pos + len) break;
    const key = buf.toString('utf8', space + 1, eq);
    // a copy: a view would keep the whole decompressed chunk it sits in alive until the layer ends
    if (key.startsWith(XATTR_KEY)) out.set(key.slice(XATTR_KEY.length), Buffer.from(buf.subarray(eq + 1, pos + len - 1)));
    pos += len;
  }
  return out;
}

/** tar-stream's internals this module reaches into (tar-stream 3; see keepRawXattrs). */
interface ExtractInternals {
  _decodeLongHeader(buf: Buffer): void;
  _header: { type?: string | null } | null;
  _pax: object | null;
  _paxGlobal: object | null;
}

/**
 * tar-stream decodes pax values as UTF-8, which mangles binary xattrs: a file capability's bytes over 0x7f
 * became U+FFFD, i.e. other (wider) capabilities. This decodes each pax header's xattrs again from its raw
 * bytes, keyed by the header object tar-stream attaches to the entry.
 * A global header is checked and then dropped: containerd (Go's archive/tar) ignores them, while tar-stream
 * would merge its records (a path, a uid, xattrs) into only those entries that have a header of their own.
 */
function keepRawXattrs(ex: object): void {
  const inner = ex as ExtractInternals;
  const decode = inner._decodeLongHeader.bind(inner);
  inner._decodeLongHeader = (buf: Buffer) => {
    const type = inner._header?.type;
    const raw = type === 'pax-header' || type === 'pax-global-header' ? paxXattrs(buf) : undefined;
    decode(buf);
    // what tar-stream decoded decides (its reading of odd lengths, "-N" included, differs from ours)
    const decoded = type === 'pax-global-header' ? inner._paxGlobal : type === 'pax-header' ? inner._pax : null;
    if (decoded && Object.keys(decoded).length > MAX_PAX_RECORDS) throw invalidArgument(`layer has a pax header with more than ${MAX_PAX_RECORDS} records: refused`);
    if (type === 'pax-global-header') inner._paxGlobal = null;
    else if (type === 'pax-header' && raw && inner._pax) rawXattrs.set(inner._pax, raw);
  };
}

/**
 * Directories of the layer known to be real directories created or checked by us (relative paths), indexed
 * by parent so that forgetting a replaced directory's subtree costs that subtree, not every known directory.
 */
class SafeDirs {
  private readonly children = new Map<string, Set<string>>();
  private readonly known = new Set<string>(['']);

  has(rel: string): boolean {
    return this.known.has(rel);
  }

  add(rel: string): void {
    if (this.known.has(rel)) return;
    this.known.add(rel);
    const parent = parentOf(rel);
    let siblings = this.children.get(parent);
    if (!siblings) this.children.set(parent, (siblings = new Set()));
    siblings.add(rel);
  }

  /** Forgets rel and everything known below it. */
  removeTree(rel: string): void {
    this.children.get(parentOf(rel))?.delete(rel);
    const stack = [rel];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      this.known.delete(d);
      const below = this.children.get(d);
      if (below) {
        // one by one: spreading a huge directory's children as arguments overflows the stack
        for (const child of below) stack.push(child);
        this.children.delete(d);
      }
    }
  }
}

/**
 * Gives the event loop a turn every few hundred steps or every 10 ms, whichever comes first: a chunk in
 * memory can hold a thousand entries, and some entries (deep paths) cost far more than others.
 */
class Turns {
  private steps = 0;
  private since = performance.now();

  /** `signal` is checked at every step: a cancelled unpack stops within one. */
  constructor(private readonly signal?: AbortSignal) {}

  async step(): Promise<void> {
    this.signal?.throwIfAborted();
    if (++this.steps < 256 && performance.now() - this.since < 10) return;
    await nextTurn();
    this.steps = 0;
    this.since = performance.now();
  }
}

/** Work left for the end of a layer; `dir` must then still be a real directory of the layer. */
/** A fifo or device node, made at the end of the layer (by `tar -x`, which can mknod). */
interface DeviceNode {
  type: 'fifo' | 'character-device' | 'block-device';
  devmajor: number;
  devminor: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

type Deferred = { dir: string; rel: string; seq?: number } & (
  | { kind: 'xattr'; owner: object; name: string; value: Buffer }
  | { kind: 'opaque' }
  | { kind: 'device'; owner: object; node: DeviceNode }
);

class LayerWriter {
  private readonly safeDirs = new SafeDirs();
  private readonly dirTimes: { rel: string; mtime: Date; seq: number }[] = [];
  /**
   * xattrs, opaque markers and device nodes (Node has no setxattr or mknod), applied at the end in a few
   * batched commands. A later entry may have replaced an op's directory (or a parent) with a symlink: the
   * op is then dropped, never applied through it.
   */
  private readonly deferred: Deferred[] = [];
  /**
   * The entry that owns a path's deferred xattrs and device node: a later entry at the same path takes the
   * path over, and what the earlier one deferred is dropped (a file capability must not pass to whatever
   * replaces its file).
   */
  private readonly owners = new Map<string, object>();
  /** The xattrs deferred for a path by its current owner (a hardlink to it gets them too). */
  private readonly xattrsOf = new Map<string, Extract<Deferred, { kind: 'xattr' }>[]>();
  /** The fifo or device node deferred for a path by its current owner (a hardlink to it gets one too). */
  private readonly nodeOf = new Map<string, { node: DeviceNode; seq: number }>();
  /**
   * Directories this layer removed (replaced by a non-directory), with the step they went at: what was
   * deferred below one before that step went with it, even if the directory is created again later.
   */
  private readonly removedDirs = new Map<string, number>();
  private steps = 0;
  /** Paths whited out by this layer; applied at the end since they only hide what lower layers have. */
  private readonly whiteouts = new Set<string>();
  readonly skippedDevices: string[] = [];
  size = 0;
  private deferredBytes = 0;
  private deferredOps = 0;

  constructor(private readonly dest: string) {}

  /** Charges memory kept until the layer ends; refuses the layer once over the budget. */
  private keep(chars: number): void {
    this.deferredBytes += chars + RECORD_BYTES;
    if (this.deferredBytes > DEFERRED_BUDGET_BYTES) {
      throw invalidArgument(`layer needs more than ${DEFERRED_BUDGET_BYTES >> 20} MiB for its directories, whiteouts, xattrs and device nodes (the budget for one layer): refused`, { path: this.dest });
    }
  }

  private addSafeDir(rel: string): void {
    if (this.safeDirs.has(rel)) return;
    this.keep(rel.length);
    this.safeDirs.add(rel);
  }

  /** Hands `rel` to a new entry: what earlier entries deferred for it is dropped. */
  private takeOver(rel: string): void {
    this.owners.delete(rel);
    this.xattrsOf.delete(rel);
    this.nodeOf.delete(rel);
  }

  private ownerOf(rel: string): object {
    let owner = this.owners.get(rel);
    if (!owner) this.owners.set(rel, (owner = {}));
    return owner;
  }

  private countOp(): void {
    if (++this.deferredOps > MAX_DEFERRED_OPS) throw invalidArgument(`layer has more than ${MAX_DEFERRED_OPS} whiteouts, opaque markers, device nodes and xattrs: refused`, { path: this.dest });
  }

  private defer(op: Deferred): void {
    this.countOp();
    this.keep(op.dir.length + op.rel.length + (op.kind === 'xattr' ? op.name.length + op.value.length : 0));
    op.seq = this.steps;
    this.deferred.push(op);
    if (op.kind === 'xattr') {
      let list = this.xattrsOf.get(op.rel);
      if (!list) this.xattrsOf.set(op.rel, (list = []));
      list.push(op);
    }
    if (op.kind === 'device') this.nodeOf.set(op.rel, { node: op.node, seq: this.steps });
  }

  private abs(rel: string): string {
    return rel === '' ? this.dest : join(this.dest, rel);
  }

  /** Makes sure every parent of `parts` is a real directory of this layer; refuses symlinked parents. */
  private ensureParents(parts: string[], original: string): void {
    const depth = parts.length - 1;
    const prefixes: string[] = [];
    for (let i = 0; i < depth; i++) prefixes.push(i === 0 ? parts[0] : `${prefixes[i - 1]}/${parts[i]}`);
    // a known directory's parents are all known: start below the deepest known one (usually the parent)
    let start = depth;
    while (start > 0 && !this.safeDirs.has(prefixes[start - 1])) start--;
    for (const rel of prefixes.slice(start)) {
      const st = lstatOrUndefined(this.abs(rel));
      if (st?.isSymbolicLink()) throw invalidArgument(`layer entry "${original}" goes through the symlink "${rel}": refused (it could write outside the layer)`);
      if (st?.isDirectory()) {
        this.addSafeDir(rel);
        continue;
      }
      if (st) unlinkSync(this.abs(rel));
      // what the layer had there (a file; a fifo or device node still deferred) goes with all deferred for it
      this.takeOver(rel);
      // parent with no tar entry of its own: created with docker's defaults
      mkdirSync(this.abs(rel), { mode: 0o755 });
      this.addSafeDir(rel);
    }
  }

  /** Whether every parent of `parts` is a directory of this layer; a symlinked parent is refused. */
  private parentsExist(parts: string[], original: string): boolean {
    let rel = '';
    for (const part of parts.slice(0, -1)) {
      rel = rel ? `${rel}/${part}` : part;
      if (this.safeDirs.has(rel)) continue;
      const st = lstatOrUndefined(this.abs(rel));
      if (st?.isSymbolicLink()) throw invalidArgument(`layer entry "${original}" goes through the symlink "${rel}": refused (it could write outside the layer)`);
      if (!st?.isDirectory()) return false;
    }
    return true;
  }

  /** The fifo or device node the layer still has to make at rel, unless its directory went since. */
  private pendingNode(rel: string): DeviceNode | undefined {
    const pending = this.nodeOf.get(rel);
    if (!pending || this.lastRemoval(parentOf(rel), new Map()) > pending.seq) return undefined;
    return pending.node;
  }

  /** Removes whatever is at rel unless both are directories. */
  private async clearFor(rel: string, isDir: boolean): Promise<boolean> {
    const st = lstatOrUndefined(this.abs(rel));
    if (!st) return false;
    if (!st.isDirectory()) {
      unlinkSync(this.abs(rel));
      return false;
    }
    if (isDir) return true;
    // an empty one at once; a whole tree (the layer may have put many files there) by one `rm` process
    if (!tryRemoveEmptyDir(this.abs(rel))) await removeTree(this.abs(rel));
    this.safeDirs.removeTree(rel);
    this.removedDirs.set(rel, ++this.steps);
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
      await this.clearFor(rel, false);
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
    const pax = (h as Headers & { pax?: object }).pax;
    const attrs = pax && rawXattrs.get(pax);
    if (!attrs) return;
    let bytes = 0;
    for (const [name, value] of attrs) {
      bytes += name.length + value.length;
      if (bytes > MAX_ENTRY_XATTR_BYTES) throw invalidArgument(`layer entry "${h.name.slice(0, 200)}" has more than ${MAX_ENTRY_XATTR_BYTES} bytes of xattrs, more than Linux stores: refused`);
      // overlay's own xattrs inside a layer would let it forge whiteouts/redirects: never applied
      if (name.startsWith('trusted.overlay.')) continue;
      this.defer({ kind: 'xattr', dir: parentOf(rel), rel, owner: this.ownerOf(rel), name, value });
    }
  }

  async entry(header: Headers, body: Readable): Promise<void> {
    for (const name of [header.name, header.linkname ?? '']) {
      if (Buffer.byteLength(name) > MAX_NAME_BYTES) throw invalidArgument(`layer entry name or link target is over ${MAX_NAME_BYTES} bytes (PATH_MAX): "${name.slice(0, 100)}…"`);
      if (name.includes('\uFFFD')) throw invalidArgument(`layer entry name or link target "${name.slice(0, 200)}" is not UTF-8: refused`);
    }
    const h = asGnuTarReadsIt(header);
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
      this.defer({ kind: 'opaque', dir: parentRel, rel: parentRel });
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      body.resume();
      // Same-layer entries are never hidden by a whiteout (it applies to lower layers only), whatever the
      // order of entries: so nothing is removed here, see finish().
      const name = base.slice(WHITEOUT_PREFIX.length);
      // ".wh.." and ".wh..." would hide the directory itself or its parent (the snapshot's own directory)
      if (name === '.' || name === '..') throw invalidArgument(`layer whiteout "${h.name.slice(0, 200)}" names no entry: refused`);
      const hidden = [...parts.slice(0, -1), name].join('/');
      if (base.length > WHITEOUT_PREFIX.length && !this.whiteouts.has(hidden)) {
        this.countOp();
        this.keep(hidden.length);
        this.whiteouts.add(hidden);
      }
      return;
    }
    const rel = parts.join('/');
    const path = this.abs(rel);
    this.steps++;
    // this entry takes the path over from any earlier one, except a directory declared again (it is kept,
    // with what was deferred for it) and a hardlink to itself
    if (h.type !== 'directory' && h.type !== 'link') this.takeOver(rel);
    switch (h.type) {
      case 'directory': {
        body.resume();
        // try first, look only on EEXIST: most entries are new paths
        const created = tryCreate(() => mkdirSync(path, { mode: 0o700 }));
        const kept = !created && (await this.clearFor(rel, true));
        if (!kept) this.takeOver(rel);
        if (!created && !kept) mkdirSync(path, { mode: 0o700 });
        this.addSafeDir(rel);
        this.meta(path, h, false);
        this.keep(rel.length);
        this.dirTimes.push({ rel, mtime: h.mtime ?? new Date(0), seq: this.steps });
        break;
      }
      case 'file':
      case 'contiguous-file': {
        await this.writeFile(rel, h, body);
        break;
      }
      case 'symlink': {
        body.resume();
        // the target is stored as-is: it is only resolved inside the container's mount namespace
        if (!tryCreate(() => symlinkSync(h.linkname ?? '', path))) {
          await this.clearFor(rel, false);
          symlinkSync(h.linkname ?? '', path);
        }
        this.meta(path, h, true);
        break;
      }
      case 'link': {
        body.resume();
        const target = cleanPath(h.linkname ?? '');
        if (target.length === 0) throw invalidArgument(`layer hardlink "${h.name}" has an empty target`);
        const tpath = this.abs(target.join('/'));
        // the target's parents are looked at, never made: a link cannot create what it points at
        const st = this.parentsExist(target, h.linkname ?? '') ? lstatOrUndefined(tpath) : undefined;
        const pendingNode = st ? undefined : this.pendingNode(target.join('/'));
        if (pendingNode) {
          // a link to a fifo or device node not made yet (they are made at the end): the same node again,
          // made under this name too (an inode of its own, which nothing can tell from a shared one but
          // its link count)
          if (tpath === path) break;
          this.takeOver(rel);
          await this.clearFor(rel, false);
          this.defer({ kind: 'device', dir: parentOf(rel), rel, owner: this.ownerOf(rel), node: { ...pendingNode, mtime: h.mtime ?? pendingNode.mtime } });
          for (const op of this.xattrsOf.get(target.join('/')) ?? []) this.defer({ ...op, dir: parentOf(rel), rel, owner: this.ownerOf(rel) });
          break;
        }
        if (!st) throw invalidArgument(`layer hardlink "${h.name}" points at "${h.linkname}", which is not in this layer`);
        if (st.isDirectory()) throw invalidArgument(`layer hardlink "${h.name}" points at a directory`);
        if (tpath === path) break;
        this.takeOver(rel);
        await this.clearFor(rel, false);
        linkSync(tpath, path);
        // the same inode: the xattrs its first name deferred are the link's too, whatever later replaces that name
        for (const op of this.xattrsOf.get(target.join('/')) ?? []) this.defer({ ...op, dir: parentOf(rel), rel, owner: this.ownerOf(rel) });
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        body.resume();
        await this.clearFor(rel, false);
        const node: DeviceNode = { type: h.type, devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0, mode: (h.mode ?? 0o644) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0, mtime: h.mtime ?? new Date(0) };
        // `tar -x` makes the node from a header that holds numbers to 262143 (no real device needs more)
        if (node.devmajor > MAX_USTAR_NUMBER || node.devminor > MAX_USTAR_NUMBER) throw invalidArgument(`layer device node "${h.name.slice(0, 200)}" has numbers ${node.devmajor}:${node.devminor}, over the ${MAX_USTAR_NUMBER} skiff supports: refused`);
        this.defer({ kind: 'device', dir: parentRel, rel, owner: this.ownerOf(rel), node });
        break;
      }
      default:
        // tar-stream consumes pax and GNU long-name headers itself; asGnuTarReadsIt refused unknown types
        throw invalidArgument(`layer entry "${h.name.slice(0, 200)}" has the unsupported type ${String(h.type)}: refused`);
    }
    this.xattrs(rel, h);
  }

  /** The last step at which rel or one of its parents was removed (0: never). */
  private lastRemoval(rel: string, memo: Map<string, number>): number {
    if (this.removedDirs.size === 0) return 0;
    return foldAncestors(rel, memo, 0, (last, dir) => Math.max(last, this.removedDirs.get(dir) ?? 0));
  }

  /** Whether rel and all its parents are still real directories (not symlinks) of this layer. */
  private realDir(rel: string, cache: Map<string, boolean>): boolean {
    return foldAncestors(rel, cache, true, (ok, dir) => ok && lstatOrUndefined(this.abs(dir))?.isDirectory() === true);
  }

  async finish(signal?: AbortSignal): Promise<void> {
    const cache = new Map<string, boolean>();
    const turns = new Turns(signal);
    const whiteouts: string[] = [];
    const opaque: string[] = [];
    const xattrs: { rel: string; name: string; value: Buffer }[] = [];
    const devices: NodeEntry[] = [];
    const removedAt = new Map<string, number>();
    for (const op of this.deferred) {
      await turns.step();
      if (op.kind !== 'opaque' && this.owners.get(op.rel) !== op.owner) continue;
      if (this.lastRemoval(op.dir, removedAt) > (op.seq ?? 0)) continue;
      if (!this.realDir(op.dir, cache)) continue;
      if (op.kind === 'xattr') xattrs.push(op);
      else if (op.kind === 'opaque') opaque.push(op.rel);
      else devices.push({ ...op.node, name: op.rel });
    }
    // in the layer's order: its device nodes exist before whiteouts are placed (a whiteout never replaces what
    // the layer itself has) and before xattrs are set on them
    if (devices.length > 0) {
      // a node tar could not make (EPERM in a user namespace, for instance) is logged, not fatal, as in containerd
      await this.makeNodes(devices, signal);
      for (const d of devices) {
        const st = lstatOrUndefined(this.abs(d.name));
        if (!st) this.skippedDevices.push(d.name);
        // the packer writes mode 0 as 0644, and tar applies the umask when not root: the layer's mode, exactly
        // (st is the node tar just made in a checked directory, never a symlink)
        else if ((st.mode & 0o7777) !== d.mode) chmodSync(this.abs(d.name), d.mode);
      }
    }
    for (const rel of this.whiteouts) {
      await turns.step();
      if (!this.realDir(parentOf(rel), cache)) continue;
      const st = lstatOrUndefined(this.abs(rel));
      // nothing of this layer there: an overlay whiteout; a directory of this layer replaces the lower one
      // entirely, so it is opaque; a file of this layer simply replaces the lower entry
      if (!st) whiteouts.push(rel);
      else if (st.isDirectory()) opaque.push(rel);
    }
    if (whiteouts.length > 0) {
      const mtime = new Date(0);
      const res = await this.makeNodes(whiteouts.map((name) => ({ name, type: 'character-device', devmajor: 0, devminor: 0, mode: 0o600, uid: 0, gid: 0, mtime })), signal);
      if (res.code !== 0) throw internal(`could not create ${whiteouts.length} overlay whiteouts: ${(res.stderr.trim() || `tar exit ${res.code ?? res.signal}`).slice(0, 300)}`, { path: this.dest });
    }
    const opaqueFailed = await this.setXattrs(opaque.map((rel) => ({ rel, name: 'trusted.overlay.opaque', value: Buffer.from('y') })), signal);
    if (opaqueFailed) throw internal(`could not mark directories opaque (trusted.overlay.opaque): ${opaqueFailed}`, { path: this.dest });
    // as tar and containerd do: an xattr the file system refuses (security.* under a policy, user.* on a symlink) is skipped
    await this.setXattrs(xattrs, signal);
    // directory mtimes last (creating their children changed them), in the layer's order so that a directory
    // declared again ends with its last mtime; never that of a directory the layer has since replaced
    for (const d of this.dirTimes) {
      await turns.step();
      if (this.lastRemoval(d.rel, removedAt) > d.seq) continue;
      if (this.realDir(d.rel, cache)) lutimesSync(this.abs(d.rel), d.mtime, d.mtime);
    }
  }

  /**
   * Makes fifos, device nodes and overlay whiteouts (0/0 character devices) with one `tar -x` (a process per
   * mknod cost ~1.5 ms each), fed archives of a thousand entries at a time (-i reads them back to back) so
   * memory stays flat. Owners are numeric and modes exact, as the layer gave them.
   */
  private makeNodes(nodes: NodeEntry[], signal?: AbortSignal): Promise<RunResult> {
    const input = Readable.from(nodeArchives(nodes), { objectMode: false });
    const owners = IS_ROOT ? ['--same-owner', '--same-permissions'] : [];
    return run('tar', ['-x', '-i', '--numeric-owner', ...owners, '-f', '-', '-C', this.dest], { input, timeoutMs: 120_000 + 5 * nodes.length, signal });
  }

  /**
   * Sets xattrs with one `setfattr --restore` (getfattr's dump format; -h: a symlink's own xattrs, never its
   * target's). Returns setfattr's complaint when any failed, '' when all were set.
   */
  private async setXattrs(attrs: { rel: string; name: string; value: Buffer }[], signal?: AbortSignal): Promise<string> {
    if (attrs.length === 0) return '';
    const dump = attrs.map((a) => `# file: ${dumpQuote(Buffer.from(this.abs(a.rel)))}\n${dumpQuote(Buffer.from(a.name))}=0x${a.value.toString('hex')}\n\n`).join('');
    const res = await run('setfattr', ['-h', '--restore=-'], { input: dump, timeoutMs: 120_000 + attrs.length, signal });
    return res.code === 0 ? '' : (res.stderr.trim() || `setfattr exit ${res.code ?? res.signal}`).slice(0, 300);
  }
}

/** What tar-stream's packer writes in a 6-digit octal field (ids, device numbers). */
const MAX_USTAR_NUMBER = 0o777777;

/** A node for makeNodes: its path in the layer and what it is. */
type NodeEntry = DeviceNode & { name: string };

async function* nodeArchives(nodes: NodeEntry[]): AsyncGenerator<Buffer> {
  for (let i = 0; i < nodes.length; i += 1000) {
    const pack = tarPack();
    const chunks: Buffer[] = [];
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    const ended = new Promise<void>((resolve, reject) => {
      pack.once('end', resolve);
      pack.once('error', reject);
    });
    for (const n of nodes.slice(i, i + 1000)) {
      // tar-stream writes ids in 6 octal digits (to 262143) and whole seconds from 1970 to 2242: others go
      // in pax records, as GNU tar writes them
      const ms = n.mtime.getTime();
      const inUstar = n.uid <= MAX_USTAR_NUMBER && n.gid <= MAX_USTAR_NUMBER && ms >= 0 && ms <= 0o77777777777 * 1000 && ms % 1000 === 0;
      // copies: the packer fills in fields it finds falsy (mode 0 becomes 0644) on the object it is given
      pack.entry(inUstar ? { ...n } : { ...n, uid: 0, gid: 0, mtime: new Date(0), pax: { uid: String(n.uid), gid: String(n.gid), mtime: String(ms / 1000) } });
    }
    pack.finalize();
    await ended;
    yield Buffer.concat(chunks);
  }
}

/** Quotes a name for getfattr's dump format: control bytes, space, "=", backslash and non-ASCII as \ooo. */
function dumpQuote(b: Buffer): string {
  let out = '';
  for (const c of b) out += c <= 0x20 || c === 0x3d || c === 0x5c || c >= 0x7f ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
  return out;
}

/** Removes an empty directory; false when it is not empty. */
function tryRemoveEmptyDir(path: string): boolean {
  try {
    rmdirSync(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') return false;
    throw err;
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

/**
 * Folds `step` over rel's ancestors from the root down to rel, remembering each directory's result in `memo`:
 * the nearest ancestor already seen decides for those below it, so each directory is looked at once and
 * thousands of operations deep down a tree cost no more than near its root.
 */
function foldAncestors<T>(rel: string, memo: Map<string, T>, atRoot: T, step: (above: T, dir: string) => T): T {
  const unknown: string[] = [];
  let cur = rel;
  let known: T | undefined;
  while (cur !== '' && (known = memo.get(cur)) === undefined) {
    unknown.push(cur);
    cur = parentOf(cur);
  }
  let acc = cur === '' || known === undefined ? atRoot : known;
  for (let i = unknown.length - 1; i >= 0; i--) {
    acc = step(acc, unknown[i]);
    memo.set(unknown[i], acc);
  }
  return acc;
}

/** Largest uid/gid Linux takes ((uid_t)-1 means "no change"). */
const MAX_ID = 0xfffffffe;

/**
 * The entry as GNU tar (and Go's archive/tar, which containerd uses) reads it: tar-stream applies only a pax
 * header's path, linkpath and size, and types an old-style directory ("name/" with typeflag 0) as a file.
 */
function asGnuTarReadsIt(h: Headers): Headers {
  const name = h.name.slice(0, 200);
  const pax = (h as Headers & { pax?: Record<string, string> | null }).pax ?? {};
  // a type tar-stream does not know (GNU sparse 'S', dumpdir 'D', multi-volume 'M', vendor types): writing
  // its body as a file would put the wrong bytes where a real file belongs
  if (h.type === null) throw invalidArgument(`layer entry "${name}" has an entry type skiff does not support (GNU sparse, dumpdir, multi-volume…): refused`);
  if (Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) throw invalidArgument(`layer entry "${name}" is a sparse file (pax GNU.sparse), which skiff does not support: refused`);
  const type = (h.type === undefined || h.type === 'file') && h.name.endsWith('/') ? 'directory' : (h.type ?? 'file');
  // an empty pax value means "use the ustar field", as Go and GNU tar read it
  const id = (key: 'uid' | 'gid'): number => {
    const v = pax[key] || String(h[key] ?? 0);
    if (!/^\d{1,10}$/.test(v) || Number(v) > MAX_ID) throw invalidArgument(`layer entry "${name}" has ${key} "${v.slice(0, 40)}", not a ${key}: refused`);
    return Number(v);
  };
  let mtime = h.mtime;
  if (pax.mtime) {
    // seconds since the epoch with an optional fraction; milliseconds are what a Date keeps
    if (!/^-?\d{1,12}(\.\d{1,30})?$/.test(pax.mtime)) throw invalidArgument(`layer entry "${name}" has pax mtime "${pax.mtime.slice(0, 40)}", not a time: refused`);
    mtime = new Date(Math.round(Number(pax.mtime) * 1000));
  }
  return { ...h, type, uid: id('uid'), gid: id('gid'), mtime };
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

/**
 * Unpacks a (possibly compressed) layer stream into the empty directory `dest`. `signal` stops it, also
 * what is already read: its reason is the error then.
 */
export async function unpackLayer(body: Readable, dest: string, expectedDiffId?: string, mediaType?: string, signal?: AbortSignal): Promise<UnpackResult> {
  // only the body's own failures: nothing downstream is piped back into it
  let readError: unknown;
  const onReadError = (e: unknown) => (readError ??= e);
  body.on('error', onReadError);
  try {
    signal?.throwIfAborted();
    return await unpackStream(body, dest, expectedDiffId, mediaType, signal);
  } catch (err) {
    // a piped source is only unpiped when the pipeline fails: destroy it, or its file stays open
    body.destroy();
    throw classify(err, signal?.aborted ? abortReason(signal, dest) : readError, dest);
  } finally {
    body.off('error', onReadError);
  }
}

function abortReason(signal: AbortSignal, dest: string): SkiffError {
  const reason: unknown = signal.reason;
  return reason instanceof SkiffError ? reason : cancelled('layer unpack cancelled', { path: dest });
}

/** errno codes that say the host's disk or setup failed, not that the layer asked for something impossible. */
const HOST_FAULTS = new Set(['EIO', 'EROFS', 'EACCES', 'EPERM', 'EBADF', 'EUCLEAN', 'ESTALE', 'ENXIO', 'ENODEV']);

/**
 * What kind a failed unpack is: the blob could not be read (INTERNAL, or CANCELLED when its download was
 * abandoned), the disk filled up (RESOURCE_EXHAUSTED) or failed (INTERNAL), or the layer is bad
 * (INVALID_ARGUMENT: not a tar, or names and links the file system cannot take).
 */
function classify(err: unknown, readError: unknown, dest: string): SkiffError {
  const ctx = { path: dest };
  // a failed read surfaces downstream as something else (a truncated tar, zstd killed): the read decides
  if (readError !== undefined) {
    if (readError instanceof SkiffError) return readError;
    return fromSystemError(readError, 'reading the layer blob failed', ctx) ?? internal(`reading the layer blob failed: ${errorMessage(readError)}`, ctx, readError);
  }
  if (err instanceof SkiffError) return err;
  const sys = fromSystemError(err, 'writing the layer failed', ctx);
  if (sys && (sys.kind === 'resource_exhausted' || HOST_FAULTS.has(errnoCode(err) ?? ''))) return sys;
  if (sys) return invalidArgument(`layer cannot be applied: ${errorMessage(err)}`, ctx, err);
  // tar-stream's and zlib's errors carry no errno code (zlib's are Z_*): the layer's data is at fault
  return invalidArgument(`layer is not a valid tar stream: ${errorMessage(err)}`, ctx, err);
}

async function unpackStream(body: Readable, dest: string, expectedDiffId?: string, mediaType?: string, signal?: AbortSignal): Promise<UnpackResult> {
  const { stream, done, stop } = await decompress(body, mediaType);
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
  keepRawXattrs(ex);
  const consume = (async () => {
    const turns = new Turns(signal);
    for await (const entry of ex) {
      await writer.entry(entry.header, entry as unknown as Readable);
      await turns.step();
    }
  })();
  // hash everything, including the tar padding after the last entry
  const piped = pipeline(stream, hasher, ex);
  const onAbort = () => ex.destroy(abortReason(signal!, dest));
  signal?.addEventListener('abort', onAbort, { once: true });
  // it may have fired while the first chunk was awaited: a listener added now would never hear of it
  if (signal?.aborted) onAbort();
  try {
    await Promise.all([piped, consume, done]);
  } catch (err) {
    stop();
    stream.destroy();
    ex.destroy();
    // the entry loop may be inside an await (removing a replaced tree): once this rejects, the caller may
    // empty the directory and unpack into it again, so nothing of this unpack may still be writing there
    await Promise.allSettled([consume, done]);
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  signal?.throwIfAborted();
  await writer.finish(signal);
  const diffId = `sha256:${hash.digest('hex')}`;
  if (expectedDiffId && diffId !== expectedDiffId) {
    throw invalidArgument(`layer content has diff_id ${diffId}, the image config says ${expectedDiffId}`);
  }
  return { diffId, size: writer.size, skippedDevices: writer.skippedDevices };
}

const CHUNK = 512 * 1024;

/**
 * Unpacks run in the daemon's own thread. They once ran in worker threads, but each worker is an isolate
 * with its own heap and malloc arena, which grew the daemon by ~50 MB during a pull; here the file system
 * calls are short (one small file each) and the entry loop yields every few hundred entries, so other calls
 * still get answers within tens of milliseconds (bench/image-pull.bench.mjs measures it). Inflating runs on
 * libuv's thread pool either way. Two layers at a time keep the pool busy without holding more buffers than
 * that; a layer waiting for its download's next bytes gives its slot up meanwhile.
 */
const unpackSlots = new Slots(2);

/** Unpacks the complete layer blob `file` into `dest`; `signal` stops it (CANCELLED). */
export function unpackLayerFile(file: string, dest: string, expectedDiffId?: string, mediaType?: string, signal?: AbortSignal): Promise<UnpackResult> {
  return unpackSlots.run(() => unpackLayer(createReadStream(file, { highWaterMark: CHUNK }), dest, expectedDiffId, mediaType, signal), signal);
}

/** An unpack that follows a blob while it is being downloaded (see unpackGrowingFile). */
export interface LiveUnpack {
  /** Says the blob's first `n` bytes are in the file. */
  available(n: number): void;
  /** Stops it (the download restarted or failed); `result` then rejects (CANCELLED) once the unpack has stopped. */
  abort(): void;
  /** Whether abort() was called: what it read may then not be the verified blob. */
  readonly aborted: boolean;
  result: Promise<UnpackResult>;
}

/**
 * Unpacks a layer blob of `size` bytes while it is still being downloaded into `file` (renamed to
 * `committed` once verified): only bytes `available()` said were written are read, then it waits for more.
 * So download and unpack overlap instead of running one after the other.
 */
export function unpackGrowingFile(file: string, committed: string, size: number, dest: string, expectedDiffId: string, mediaType?: string): LiveUnpack {
  let available = 0;
  let wake: (() => void) | undefined;
  let abandoned = false;
  const stop = new AbortController();
  const stopReading = (reason: SkiffError) => {
    stop.abort(reason);
    wake?.();
  };
  // the signal also stops what was read already: one chunk of a compressed layer can inflate to gigabytes
  const result = unpackLayer(Readable.from(growingFile(), { objectMode: false }), dest, expectedDiffId, mediaType, stop.signal);
  // a failed unpack must not keep waiting for bytes (and then take a slot to read a chunk nobody wants)
  result.catch(() => stopReading(cancelled('the layer unpack failed', { path: dest })));

  async function* growingFile(): AsyncGenerator<Buffer> {
    let holdsSlot = false;
    let fh: Awaited<ReturnType<typeof open>> | undefined;
    try {
      let pos = 0;
      while (pos < size) {
        // whole chunks only: a read per network packet's worth of bytes cost CPU and made many odd-sized Buffers
        while (available - pos < Math.min(CHUNK, size - pos) && !stop.signal.aborted) {
          if (holdsSlot) unpackSlots.release();
          holdsSlot = false;
          await new Promise<void>((r) => (wake = r));
        }
        stop.signal.throwIfAborted();
        if (!holdsSlot) await unpackSlots.acquire(stop.signal);
        holdsSlot = true;
        // the download may have been committed (renamed, same inode) before the first bytes were read
        fh ??= await open(file, 'r').catch((err: unknown) => {
          if (errnoCode(err) === 'ENOENT') return open(committed, 'r');
          throw err;
        });
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, available - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) throw internal(`layer blob ended at byte ${pos} of ${size}`, { path: dest });
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      if (holdsSlot) unpackSlots.release();
      await fh?.close();
    }
  }

  return {
    available(n) {
      available = Math.max(available, n);
      wake?.();
    },
    abort() {
      abandoned = true;
      stopReading(cancelled('the download stopped or restarted: this unpack of it was abandoned', { path: dest }));
    },
    get aborted() {
      return abandoned;
    },
    result,
  };
}
