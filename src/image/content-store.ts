// Content-addressed blobs (containerd's content store): blobs/sha256/<hex>. A blob is streamed to a temp
// file under ingest/, its digest and size verified while it streams, fsynced and renamed into place, so a
// blob that exists is always complete and correct. Concurrent requests for one digest share one download,
// and a download cut short resumes where it stopped when the registry honours Range (see Ingest).
import { mkdir, rename, rm, stat, readdir, readFile, open, type FileHandle } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { invalidArgument, errnoCode, unavailable, SkiffError } from '../errors.js';
import { isDigest } from './reference.js';
import { fsyncDir } from '../store/atomic.js';
import { streamed } from '../util/gc.js';
import { untilAborted } from '../util/abort.js';

/** The bytes a registry sent are not the blob asked for (short, long or different): retryable elsewhere. */
export class DigestMismatchError extends SkiffError {
  constructor(message: string) {
    super('unavailable', message);
  }
}

/**
 * One blob being downloaded into ingest/: bytes are hashed as they are appended, so a download cut short
 * can continue where it stopped (an HTTP Range request answered with 206) or start over (anything else).
 * Nothing is visible in blobs/ until commit() has verified size and digest.
 */
export class Ingest {
  private hash = createHash('sha256');
  private fh: FileHandle | undefined;
  /** Bytes written and hashed so far. */
  offset = 0;
  /** Told about every write and every restart (a reader following the file while it grows). */
  watcher?: { written(offset: number): void; restarted(): void };

  constructor(
    readonly digest: string,
    readonly size: number | undefined,
    readonly tmp: string,
    private readonly onBytes?: (n: number) => void,
  ) {}

  /** Forgets what was written: the next append must start at 0. */
  async reset(): Promise<void> {
    this.watcher?.restarted();
    if (this.fh) await this.fh.truncate(0);
    this.hash = createHash('sha256');
    this.offset = 0;
  }

  /**
   * Appends `body`, whose first byte is the blob's byte number `start`: 0 restarts the blob, `offset`
   * continues it; anything else is refused. A body that fails midway keeps what arrived before (resumable).
   */
  async append(body: Readable, start: number): Promise<void> {
    if (start !== 0 && start !== this.offset) {
      body.destroy();
      throw new DigestMismatchError(`blob ${this.digest}: a resumed download started at byte ${start}, not ${this.offset}`);
    }
    if (start === 0 && this.offset > 0) await this.reset();
    const fh = await this.openFile();
    for await (const c of body) {
      const chunk = c as Buffer;
      if (this.size !== undefined && this.offset + chunk.length > this.size) {
        body.destroy();
        await this.reset();
        throw new DigestMismatchError(`blob ${this.digest}: more than the expected ${this.size} bytes`);
      }
      this.hash.update(chunk);
      await fh.write(chunk, 0, chunk.length, this.offset);
      this.offset += chunk.length;
      this.watcher?.written(this.offset);
      streamed.add(chunk.length);
      this.onBytes?.(chunk.length);
    }
  }

  async openFile(): Promise<FileHandle> {
    this.fh ??= await open(this.tmp, 'w', 0o644);
    return this.fh;
  }

  /** Whether all bytes have arrived (the size is known up front for every blob skiff fetches). */
  complete(): boolean {
    return this.size === undefined || this.offset === this.size;
  }

  /** Verifies size and digest; a mismatch resets the ingest so a retry starts from scratch. */
  async verify(): Promise<void> {
    if (!this.complete()) throw new DigestMismatchError(`blob ${this.digest}: got ${this.offset} bytes, expected ${this.size} (truncated download)`);
    const got = `sha256:${this.hash.copy().digest('hex')}`;
    if (got !== this.digest) {
      await this.reset();
      throw new DigestMismatchError(`blob ${this.digest}: content has digest ${got}`);
    }
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }
}

/** Fills an ingest (downloads, with retries and resumes); ContentStore verifies and commits what it wrote. */
export type BlobFill = (ingest: Ingest) => Promise<void>;

export class ContentStore {
  private readonly inflight = new Map<string, Promise<void>>();
  readonly blobsDir: string;
  private readonly ingestDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, 'blobs', 'sha256');
    this.ingestDir = join(root, 'ingest');
  }

  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true });
    // leftovers of downloads a crash interrupted: never committed, safe to drop
    await rm(this.ingestDir, { recursive: true, force: true });
    await mkdir(this.ingestDir, { recursive: true });
  }

  path(digest: string): string {
    if (!isDigest(digest)) throw invalidArgument(`unsupported digest "${digest.slice(0, 100)}" (only sha256 is supported)`, { digest: digest.slice(0, 100) });
    return join(this.blobsDir, digest.slice('sha256:'.length));
  }

  async has(digest: string): Promise<boolean> {
    try {
      await stat(this.path(digest));
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  async read(digest: string): Promise<Buffer> {
    return readFile(this.path(digest));
  }

  async size(digest: string): Promise<number> {
    return (await stat(this.path(digest))).size;
  }

  /**
   * Makes sure the blob is stored: downloads it from `source` (verifying digest and size) unless present.
   * Callers asking for the same digest at the same time wait on the same download. `signal` is this
   * caller's cancel: it stops a download this caller runs; a caller waiting on another's download stops
   * waiting, and when the other's caller cancels, a waiter downloads the blob itself.
   */
  async ensure(digest: string, size: number | undefined, fill: BlobFill, onBytes?: (n: number) => void, onIngest?: (ing: Ingest) => void, signal?: AbortSignal): Promise<void> {
    for (let existing = this.inflight.get(digest); existing; existing = this.inflight.get(digest)) {
      try {
        return await untilAborted(existing, signal);
      } catch (err) {
        if (signal?.aborted || !(err instanceof SkiffError && err.kind === 'cancelled')) throw err;
      }
    }
    const p = (async () => {
      if (await this.has(digest)) return;
      await this.ingest(digest, size, fill, onBytes, onIngest);
    })().finally(() => this.inflight.delete(digest));
    this.inflight.set(digest, p);
    return p;
  }

  /** Runs `fill` into a temp file; commits it (fsync, rename) only if digest and size match. */
  private async ingest(digest: string, size: number | undefined, fill: BlobFill, onBytes?: (n: number) => void, onIngest?: (ing: Ingest) => void): Promise<void> {
    const target = this.path(digest);
    const ing = new Ingest(digest, size, join(this.ingestDir, `${digest.slice(7, 23)}-${randomBytes(6).toString('hex')}`), onBytes);
    try {
      await ing.openFile();
      onIngest?.(ing);
      await fill(ing);
      await ing.verify();
      await ing.close();
      const fh = await open(ing.tmp, 'r');
      await fh.sync().finally(() => fh.close());
      await rename(ing.tmp, target);
      await fsyncDir(this.blobsDir);
    } catch (err) {
      await ing.close().catch(() => undefined);
      await rm(ing.tmp, { force: true });
      if (err instanceof SkiffError) throw err;
      throw unavailable(`downloading blob ${digest} failed: ${(err as Error).message}`, { digest }, err);
    }
  }

  /** Stores bytes already in memory (manifests, configs) after verifying them. */
  async put(digest: string, data: Buffer): Promise<void> {
    if (await this.has(digest)) return;
    await this.ingest(digest, data.length, (ing) => ing.append(Readable.from([data]), 0));
  }

  async list(): Promise<string[]> {
    return (await readdir(this.blobsDir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }
}

