// Attach to a container's stdio through conmon: its attach socket (SOCK_SEQPACKET, hence node-unix-socket)
// delivers each chunk of output as one packet whose first byte names the pipe (conmon's numbering: 1 stdin,
// 2 stdout, 3 stderr), and takes raw stdin packets; closing our write side closes the container's stdin
// (conmon runs without --leave-stdin-open). Terminal resizes go to conmon's ctl fifo. Detaching never
// stops the container.
import { openSync, closeSync, constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { SeqpacketSocket } from 'node-unix-socket';
import type { CommandIo } from '../stream/backend.js';
import { errorMessage, failedPrecondition } from '../errors.js';

const STDOUT_PACKET = 2;
const STDERR_PACKET = 3;
/** conmon reads stdin packets into a buffer of this size; a longer packet would be cut. */
const STDIN_PACKET_MAX = 8192;
/** conmon's ctl fifo message type for a terminal resize ("1 <height> <width>\n"). */
const CTL_RESIZE = 1;

/**
 * Open attach sockets, held here while in use: nothing documents that node-unix-socket's native side keeps
 * its JS object alive, and a collected socket would end a session silently.
 */
const live = new Set<SeqpacketSocket>();

export interface AttachTarget {
  id: string;
  socketPath: string;
  ctlPath: string;
  tty: boolean;
}

/** Relays until the container's stdio closes (it exited) or the client goes away (io.signal). */
export async function attachConmon(t: AttachTarget, io: CommandIo): Promise<void> {
  const sock = await connectSeqpacket(t.socketPath, t.id);
  live.add(sock);
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      live.delete(sock);
      io.signal.removeEventListener('abort', detach);
      io.resize.off('resize', onResize);
      io.stdin?.off('data', onStdin);
      io.stdin?.off('end', onStdinEnd);
      resolve();
    };
    const detach = (): void => {
      sock.destroy();
      finish();
    };
    sock.on('data', (packet: Buffer) => {
      if (packet.length < 2) return;
      const data = packet.subarray(1);
      const target = packet[0] === STDERR_PACKET && !t.tty ? io.stderr : packet[0] === STDOUT_PACKET || t.tty ? io.stdout : undefined;
      if (target && !target.writableEnded && !target.destroyed) target.write(Buffer.from(data));
    });
    sock.on('error', () => finish());
    sock.on('end', () => {
      sock.destroy();
      finish();
    });
    sock.on('close', () => finish());
    const onStdin = (chunk: Buffer): void => {
      for (let at = 0; at < chunk.length; at += STDIN_PACKET_MAX) {
        const piece = chunk.subarray(at, at + STDIN_PACKET_MAX);
        sock.write(piece, 0, piece.length);
      }
    };
    const onStdinEnd = (): void => sock.end();
    io.stdin?.on('data', onStdin);
    io.stdin?.once('end', onStdinEnd);
    const onResize = ({ width, height }: { width: number; height: number }): void => {
      if (t.tty && width > 0 && height > 0) void writeCtl(t.ctlPath, `${CTL_RESIZE} ${height} ${width}\n`);
    };
    io.resize.on('resize', onResize);
    // A size the client sent before we got here.
    if (io.resize.last) onResize(io.resize.last);
    if (io.signal.aborted) detach();
    else io.signal.addEventListener('abort', detach, { once: true });
  });
}

/**
 * Connects through /proc/self/fd/<dir fd>/<name>: attach socket paths under a long state dir can exceed
 * the 107-byte limit of sockaddr_un.
 */
function connectSeqpacket(path: string, id: string): Promise<SeqpacketSocket> {
  let dirFd: number;
  try {
    dirFd = openSync(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch (err) {
    return Promise.reject(failedPrecondition(`cannot attach: the container's attach socket is missing (${errorMessage(err)})`, { container: id }));
  }
  return new Promise((resolve, reject) => {
    const sock = new SeqpacketSocket();
    const fail = (err: unknown): void => {
      closeSync(dirFd);
      reject(failedPrecondition(`cannot attach to the container: ${errorMessage(err)}`, { container: id }));
    };
    sock.once('error', fail);
    try {
      sock.connect(`/proc/self/fd/${dirFd}/${basename(path)}`, () => {
        sock.off('error', fail);
        closeSync(dirFd);
        resolve(sock);
      });
    } catch (err) {
      fail(err);
    }
  });
}

/** A non-blocking write to conmon's ctl fifo; ENXIO (no reader: conmon gone) is ignored. */
async function writeCtl(ctlPath: string, message: string): Promise<void> {
  try {
    const fh = await open(ctlPath, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    try {
      await fh.write(message);
    } finally {
      await fh.close();
    }
  } catch {
    // the container's monitor is gone: nothing to resize
  }
}
