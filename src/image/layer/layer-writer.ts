// Applies a layer's entries, one by one, to its snapshot directory in overlayfs's format (see unpack.ts for
// the rules), and at the end of the layer what had to wait: fifos and device nodes, whiteouts, opaque
// markers, xattrs and directory mtimes, each kind in one batched command.
import { openSync, writeSync, closeSync, fchownSync, fchmodSync, futimesSync, mkdirSync, symlinkSync, linkSync, unlinkSync, chmodSync, lchownSync, lutimesSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Header as Headers } from 'tar-stream';
import { invalidArgument, errnoCode, internal } from '../../errors.js';
import { run, type RunResult } from '../../util/exec.js';
import { removeTree } from '../../util/fs.js';
import { Turns } from '../../util/turns.js';
import { asGnuTarReadsIt, cleanPath, xattrsOf } from './tar-entries.js';
import { dumpQuote, MAX_USTAR_NUMBER, nodeArchives, type DeviceNode, type NodeEntry } from './node-archives.js';
import { foldAncestors, lstatOrUndefined, parentOf, SafeDirs, tryCreate, tryRemoveEmptyDir } from './paths.js';

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

/** Work left for the end of a layer; `dir` must then still be a real directory of the layer. */
type Deferred = { dir: string; rel: string; seq?: number } & (
  | { kind: 'xattr'; owner: object; name: string; value: Buffer }
  | { kind: 'opaque' }
  | { kind: 'device'; owner: object; node: DeviceNode }
);

export class LayerWriter {
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
    this.walkParents(parts, original, true);
  }

  /** Whether every parent of `parts` is a directory of this layer (none made); a symlinked parent is refused. */
  private parentsExist(parts: string[], original: string): boolean {
    return this.walkParents(parts, original, false);
  }

  /**
   * Walks the parents of `parts` below the deepest known directory (usually the parent itself: a known
   * directory's parents are all known), refusing symlinks. A missing parent or a non-directory in the way is
   * made a directory when `create`, else the walk answers false.
   */
  private walkParents(parts: string[], original: string, create: boolean): boolean {
    const depth = parts.length - 1;
    const prefixes: string[] = [];
    for (let i = 0; i < depth; i++) prefixes.push(i === 0 ? parts[0] : `${prefixes[i - 1]}/${parts[i]}`);
    let start = depth;
    while (start > 0 && !this.safeDirs.has(prefixes[start - 1])) start--;
    for (const rel of prefixes.slice(start)) {
      const st = lstatOrUndefined(this.abs(rel));
      if (st?.isSymbolicLink()) throw invalidArgument(`layer entry "${original}" goes through the symlink "${rel}": refused (it could write outside the layer)`);
      if (st?.isDirectory()) {
        this.addSafeDir(rel);
        continue;
      }
      if (!create) return false;
      if (st) unlinkSync(this.abs(rel));
      // what the layer had there (a file; a fifo or device node still deferred) goes with all deferred for it
      this.takeOver(rel);
      // parent with no tar entry of its own: created with docker's defaults
      mkdirSync(this.abs(rel), { mode: 0o755 });
      this.addSafeDir(rel);
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
    const attrs = xattrsOf(h);
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
