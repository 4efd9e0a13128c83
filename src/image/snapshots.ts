// Unpacked layers, one directory per chain ID (containerd's overlay snapshotter, simplified): a snapshot
// is `snapshots/<n>/fs` plus `snapshots/<n>/meta.json` naming its chain ID. Short numeric directory names
// keep overlay mount options small (see rootfs.ts). A snapshot is unpacked into `snapshots/.tmp-*` and
// renamed into place when complete, so a crash never leaves a half-unpacked snapshot that looks finished.
import { mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { removeTree } from '../util/fs.js';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { writeJsonAtomic, fsyncDir } from '../store/atomic.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { errorMessage } from '../errors.js';

export interface Snapshot {
  /** Short directory name under snapshots/. */
  id: string;
  chainId: string;
  diffId: string;
  /** Bytes of file content in the layer. */
  size: number;
}

/** chain(L0) = diff(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln)), as in the OCI image spec. */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
}

export class SnapshotStore {
  private readonly byChain = new Map<string, Snapshot>();
  private readonly lock = new KeyedMutex();
  private next = 1;

  constructor(readonly dir: string) {}

  async init(warn: (msg: string) => void): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (const name of await readdir(this.dir)) {
      const path = join(this.dir, name);
      if (name.startsWith('.tmp-')) {
        await removeTree(path);
        continue;
      }
      if (!/^\d+$/.test(name)) continue;
      this.next = Math.max(this.next, Number(name) + 1);
      try {
        const meta = JSON.parse(await readFile(join(path, 'meta.json'), 'utf8')) as Snapshot;
        this.byChain.set(meta.chainId, { ...meta, id: name });
      } catch (err) {
        warn(`snapshot ${name} has no readable meta.json (${errorMessage(err)}); removing it`);
        await removeTree(path);
      }
    }
  }

  get(chainId: string): Snapshot | undefined {
    return this.byChain.get(chainId);
  }

  all(): Snapshot[] {
    return [...this.byChain.values()];
  }

  /** Path of a snapshot's fs relative to the store dir (what overlay lowerdir gets). */
  relFs(s: Snapshot): string {
    return `${s.id}/fs`;
  }

  /**
   * Returns the snapshot for chainId, unpacking it with `fill(fsDir)` if missing. One unpack per chain ID;
   * `signal` gives up waiting for another caller's unpack.
   */
  ensure(chainId: string, fill: (fsDir: string) => Promise<{ diffId: string; size: number }>, signal?: AbortSignal): Promise<Snapshot> {
    return this.lock.run(chainId, async () => {
      const have = this.byChain.get(chainId);
      if (have) return have;
      const tmp = join(this.dir, `.tmp-${randomBytes(6).toString('hex')}`);
      try {
        await mkdir(join(tmp, 'fs'), { recursive: true, mode: 0o755 });
        const { diffId, size } = await fill(join(tmp, 'fs'));
        const id = String(this.next++);
        const snap: Snapshot = { id, chainId, diffId, size };
        await writeJsonAtomic(join(tmp, 'meta.json'), snap);
        await rename(tmp, join(this.dir, id));
        await fsyncDir(this.dir);
        this.byChain.set(chainId, snap);
        return snap;
      } catch (err) {
        await removeTree(tmp);
        throw err;
      }
    }, signal);
  }

  async remove(chainId: string): Promise<void> {
    await this.lock.run(chainId, async () => {
      const s = this.byChain.get(chainId);
      if (!s) return;
      this.byChain.delete(chainId);
      // rename first so a crash mid-delete leaves a .tmp- dir that init() removes, not a torn snapshot
      const doomed = join(this.dir, `.tmp-rm-${s.id}`);
      await rename(join(this.dir, s.id), doomed);
      await removeTree(doomed);
    });
  }
}
