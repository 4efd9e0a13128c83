// Worker thread body for unpackLayerFile / unpackGrowingFile (unpack.ts): unpacks one layer blob and posts
// the result back. A growing blob is read only as far as the parent said it was written.
import { parentPort, workerData } from 'node:worker_threads';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { unpackLayer, type UnpackReply, type WorkerJob } from './unpack.js';
import { SkiffError, errorMessage } from '../errors.js';

const CHUNK = 512 * 1024;
const job = workerData as WorkerJob;

/** Reads `file` up to `size` bytes, never past what the parent reported as written. */
function growingFile(file: string, committed: string, size: number, initiallyAvailable: number): Readable {
  let available = initiallyAvailable;
  let aborted = false;
  let wake: (() => void) | undefined;
  parentPort?.on('message', (m: { available?: number; abort?: boolean }) => {
    if (typeof m.available === 'number') available = Math.max(available, m.available);
    if (m.abort) aborted = true;
    wake?.();
  });
  return Readable.from(
    (async function* () {
      // a worker that waited for its turn may find the download already committed (renamed, same inode)
      const fh = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return open(committed, 'r');
        throw err;
      });
      try {
        let pos = 0;
        while (pos < size) {
          while (available <= pos && !aborted) await new Promise<void>((r) => (wake = r));
          if (aborted) throw new Error('the download restarted: unpacking again from the complete blob');
          const buf = Buffer.allocUnsafe(Math.min(CHUNK, available - pos));
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) throw new Error(`layer blob ended at byte ${pos} of ${size}`);
          pos += bytesRead;
          yield buf.subarray(0, bytesRead);
        }
      } finally {
        await fh.close();
      }
    })(),
    { objectMode: false },
  );
}

let reply: UnpackReply;
try {
  const body = job.growing ? growingFile(job.file, job.growing.committed, job.growing.size, job.growing.available) : createReadStream(job.file, { highWaterMark: CHUNK });
  reply = { ok: true, res: await unpackLayer(body, job.dest, job.expectedDiffId, job.mediaType) };
} catch (err) {
  reply = { ok: false, kind: err instanceof SkiffError ? err.kind : 'internal', message: err instanceof SkiffError ? err.message : errorMessage(err) };
}
// no listener left, so nothing keeps this thread alive once the reply is out
parentPort?.removeAllListeners('message');
parentPort?.postMessage(reply);
