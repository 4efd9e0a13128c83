// Content-addressed blobs (containerd's content store): blobs/sha256/<hex>. A blob is streamed to a temp
// file under ingest/, its digest and size verified while it streams, fsynced and renamed into place, so a
// blob that exists is always complete and correct. Concurrent requests for one digest share one download.
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat, readdir, readFile, open } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { invalidArgument, errnoCode, unavailable, SkiffError } from '../errors.js';
import { isDigest } from './reference.js';
import { fsyncDir } from '../store/atomic.js';

/** Something that can (re)open a blob's bytes; called again for each retry. */
export type BlobSource = () => Promise<Readable>;

/** The bytes a registry sent are not the blob asked for (short, long or different): retryable elsewhere. */
export class DigestMismatchError extends SkiffError {
  constructor(message: string) {
    super('unavailable', message);
  }
}

/** A Transform that hashes and counts what flows through, failing on excess over `size`. */
export function verifier(digest: string, size: number | undefined): Transform & { finish(): void } {
  const hash = createHash('sha256');
  let seen = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (size !== undefined && seen > size) {
        cb(new DigestMismatchError(`blob ${digest}: more than the expected ${size} bytes`));
        return;
      }
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  return Object.assign(t, {
    finish() {
      if (size !== undefined && seen !== size) throw new DigestMismatchError(`blob ${digest}: got ${seen} bytes, expected ${size} (truncated download)`);
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== digest) throw new DigestMismatchError(`blob ${digest}: content has digest ${got}`);
    },
  });
}

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
   * Callers asking for the same digest at the same time wait on the same download.
   */
  ensure(digest: string, size: number | undefined, source: BlobSource, onBytes?: (n: number) => void): Promise<void> {
    const existing = this.inflight.get(digest);
    if (existing) return existing;
    const p = (async () => {
      if (await this.has(digest)) return;
      await this.ingest(digest, size, await source(), onBytes);
    })().finally(() => this.inflight.delete(digest));
    this.inflight.set(digest, p);
    return p;
  }

  /** Writes one stream as the blob, verified; nothing is committed unless digest and size match. */
  async ingest(digest: string, size: number | undefined, body: Readable, onBytes?: (n: number) => void): Promise<void> {
    const target = this.path(digest);
    const tmp = join(this.ingestDir, `${digest.slice(7, 23)}-${randomBytes(6).toString('hex')}`);
    const check = verifier(digest, size);
    if (onBytes) check.on('data', (b: Buffer) => onBytes(b.length));
    try {
      await pipeline(body, check, createWriteStream(tmp, { mode: 0o644 }));
      check.finish();
      const fh = await open(tmp, 'r');
      await fh.sync().finally(() => fh.close());
      await rename(tmp, target);
      await fsyncDir(this.blobsDir);
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof DigestMismatchError) throw err;
      throw unavailable(`downloading blob ${digest} failed: ${(err as Error).message}`, { digest }, err);
    }
  }

  /** Stores bytes already in memory (manifests, configs) after verifying them. */
  async put(digest: string, data: Buffer): Promise<void> {
    if (await this.has(digest)) return;
    const { Readable } = await import('node:stream');
    await this.ingest(digest, data.length, Readable.from([data]));
  }

  async list(): Promise<string[]> {
    return (await readdir(this.blobsDir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }
}
