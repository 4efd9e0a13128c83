// The daemon's unix socket: a stale one left by a crash is replaced, a live one (another daemon answering
// on it) is refused, anything that is not a socket is left alone.
import { lstat, mkdir, rm, chmod } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { dirname } from 'node:path';
import { failedPrecondition, invalidArgument, errnoCode } from '../errors.js';

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;

function isAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = createConnection({ path });
    const done = (alive: boolean) => {
      conn.destroy();
      resolve(alive);
    };
    conn.once('connect', () => done(true));
    conn.once('error', () => done(false));
    conn.setTimeout(2000, () => done(false));
  });
}

export async function claimSocketPath(path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw invalidArgument(`socket path is longer than ${MAX_SOCKET_PATH} bytes`, { path });
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o711 });
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw failedPrecondition('socket path exists and is not a socket; refusing to replace it', { path });
  if (await isAlive(path)) throw failedPrecondition('another daemon is already serving on this socket', { path });
  await rm(path, { force: true });
}

/** grpc-js creates the socket with the umask's mode; CRI sockets are for root and its group only. */
export async function restrictSocket(path: string): Promise<void> {
  await chmod(path, 0o660);
}
