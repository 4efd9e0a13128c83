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
// The pieces: layer/tar-entries.ts (reading entries), layer/layer-writer.ts (applying them), layer/paths.ts,
// layer/node-archives.ts (batched mknod and setxattr); this module decompresses, hashes and drives them.
import { createGunzip } from 'node:zlib';
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { invalidArgument, errnoCode, internal, cancelled, fromSystemError, SkiffError, errorMessage } from '../errors.js';
import { streamed } from '../util/gc.js';
import { Slots } from '../util/slots.js';
import { Turns } from '../util/turns.js';
import { LayerWriter } from './layer/layer-writer.js';
import { keepRawXattrs } from './layer/tar-entries.js';

export { cleanPath } from './layer/tar-entries.js';
export { MAX_ENTRY_XATTR_BYTES, MAX_DEFERRED_OPS } from './layer/layer-writer.js';

export interface UnpackResult {
  /** sha256 of the uncompressed tar (the layer's diff_id). */
  diffId: string;
  /** Bytes of regular file content written. */
  size: number;
  /** Device nodes that could not be created (EPERM), for the log. */
  skippedDevices: string[];
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
