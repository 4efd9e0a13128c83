// Worker thread body for unpackLayerFile (unpack.ts): unpacks one layer blob and posts the result back.
import { parentPort, workerData } from 'node:worker_threads';
import { createReadStream } from 'node:fs';
import { unpackLayer, type UnpackReply } from './unpack.js';
import { SkiffError, errorMessage } from '../errors.js';

const { file, dest, expectedDiffId, mediaType } = workerData as { file: string; dest: string; expectedDiffId?: string; mediaType?: string };
let reply: UnpackReply;
try {
  reply = { ok: true, res: await unpackLayer(createReadStream(file, { highWaterMark: 512 * 1024 }), dest, expectedDiffId, mediaType) };
} catch (err) {
  reply = { ok: false, kind: err instanceof SkiffError ? err.kind : 'internal', message: err instanceof SkiffError ? err.message : errorMessage(err) };
}
parentPort?.postMessage(reply);
