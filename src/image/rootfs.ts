// A container's root filesystem: an overlay of its image's snapshots (lowest layer last in lowerdir) plus
// the container's own upper and work dirs, mounted at `<rootfsDir>/<container>/merged`.
// With 100+ layers absolute lowerdir paths would exceed the one page the kernel accepts for mount options,
// so `mount` runs with its cwd in the snapshot store and lowerdirs are short relative paths ("12/fs").
// Each rootfs has a small JSON record (handler, image, snapshot chain IDs) so image GC never removes a
// snapshot a container still uses, also across daemon restarts.
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { removeTree } from '../util/fs.js';
import { join } from 'node:path';
import { writeJsonAtomic } from '../store/atomic.js';
import { run, runChecked } from '../util/exec.js';
import { isMountPoint } from '../util/mountinfo.js';
import { errnoCode, failedPrecondition, invalidArgument } from '../errors.js';

export interface RootfsRecord {
  containerId: string;
  handler: string;
  imageId: string;
  chainIds: string[];
}

/** Linux accepts at most one page of mount data. */
export const MOUNT_OPTIONS_LIMIT = 4096;

export function overlayOptions(lowerRel: string[], upper: string, work: string): string {
  const opts = `lowerdir=${lowerRel.join(':')},upperdir=${upper},workdir=${work}`;
  if (opts.length >= MOUNT_OPTIONS_LIMIT) throw failedPrecondition(`overlay mount options are ${opts.length} bytes, over the kernel's one-page limit (too many layers)`);
  return opts;
}

// mountinfo, not `mountpoint`: no fork of the daemon per create and remove
export const isMounted = isMountPoint;

const existsOk = (err: unknown): void => {
  if (errnoCode(err) !== 'EEXIST') throw err;
};

export class RootfsStore {
  constructor(readonly dir: string) {}

  containerDir(containerId: string): string {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/.test(containerId)) throw invalidArgument(`invalid container id "${containerId.slice(0, 100)}"`);
    return join(this.dir, containerId);
  }

  async mount(rec: RootfsRecord, snapshotDir: string, lowerRel: string[]): Promise<string> {
    const dir = this.containerDir(rec.containerId);
    const merged = join(dir, 'merged');
    if (await isMounted(merged)) return merged;
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await Promise.all([
      mkdir(join(dir, 'upper'), { mode: 0o755 }).catch(existsOk),
      mkdir(join(dir, 'work'), { mode: 0o700 }).catch(existsOk),
      mkdir(merged, { mode: 0o755 }).catch(existsOk),
    ]);
    // overlay needs at least one lower dir; an image without layers gets an empty one
    const lowers = lowerRel.length > 0 ? lowerRel : [await this.emptyLower(snapshotDir)];
    const opts = overlayOptions(lowers, join(dir, 'upper'), join(dir, 'work'));
    // The record (which keeps image GC off these snapshots) is written while `mount` runs: GC runs under
    // the handler lock our caller holds until both are done, and a crash in between leaves a rootfs the
    // container's own record (written before us) has recovery remove.
    const written = writeJsonAtomic(join(dir, 'rootfs.json'), rec);
    const mounted = runChecked('mount', ['-t', 'overlay', 'overlay', '-o', opts, merged], { cwd: snapshotDir, timeoutMs: 30_000 });
    const [w, m] = await Promise.allSettled([written, mounted]);
    if (w.status === 'rejected') throw w.reason;
    if (m.status === 'rejected') throw m.reason;
    return merged;
  }

  private async emptyLower(snapshotDir: string): Promise<string> {
    await mkdir(join(snapshotDir, 'empty'), { recursive: true, mode: 0o755 });
    return 'empty';
  }

  /** Unmounts (lazily if busy) and deletes the container's upper dir. Missing is fine. */
  async remove(containerId: string): Promise<RootfsRecord | undefined> {
    const dir = this.containerDir(containerId);
    const rec = await this.read(containerId);
    const merged = join(dir, 'merged');
    if (await isMounted(merged)) {
      const res = await run('umount', [merged], { timeoutMs: 30_000 });
      if (res.code !== 0) await runChecked('umount', ['-l', merged], { timeoutMs: 30_000 });
    }
    await removeTree(dir);
    return rec;
  }

  async read(containerId: string): Promise<RootfsRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.containerDir(containerId), 'rootfs.json'), 'utf8')) as RootfsRecord;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  async all(): Promise<RootfsRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    const out: RootfsRecord[] = [];
    for (const n of names) {
      const r = await this.read(n).catch(() => undefined);
      if (r) out.push(r);
    }
    return out;
  }
}
