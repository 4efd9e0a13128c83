// The client side of the streaming protocols over SPDY/3.1, as crictl and kubectl speak them: used by
// `skiff exec -it`, `skiff attach` and `skiff port-forward`, and by the tests. Works against any CRI
// runtime's streaming server (kubelet's library, containerd, CRI-O), not just ours.
import * as http from 'node:http';
import * as https from 'node:https';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { EventEmitter } from 'node:events';
import { SpdyConnection, type SpdyStream } from './spdy/connection.js';
import type { HeaderBlock } from './spdy/headers.js';
import {
  PORTFORWARD_V1,
  PROTOCOL_HEADER,
  REMOTECOMMAND_V1,
  REMOTECOMMAND_V2,
  REMOTECOMMAND_V4,
  SPDY_REMOTECOMMAND_PROTOCOLS,
  encodeResize,
  parseErrorStream,
  type TerminalSize,
} from './protocol.js';

/** How long the server gets to accept each stream (client-go: 30 s). */
const STREAM_REPLY_TIMEOUT_MS = 30_000;

export class StreamingError extends Error {
  constructor(
    message: string,
    readonly httpStatus?: number,
  ) {
    super(message);
    this.name = 'StreamingError';
  }
}

/** Upgrades an HTTP connection at `url` to SPDY/3.1 offering `protocols`; resolves with the session. */
export function dialSpdy(url: string, protocols: readonly string[], opts: { rejectUnauthorized?: boolean } = {}): Promise<{ conn: SpdyConnection; protocol: string }> {
  const target = new URL(url);
  const lib = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(target, {
      method: 'POST',
      headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', [PROTOCOL_HEADER]: protocols.join(', ') },
      ...(target.protocol === 'https:' ? { rejectUnauthorized: opts.rejectUnauthorized ?? true } : {}),
    });
    req.once('upgrade', (res: http.IncomingMessage, socket: Socket, head: Buffer) => {
      const protocol = String(res.headers[PROTOCOL_HEADER] ?? '');
      const conn = new SpdyConnection(socket, { server: false });
      conn.feed(head);
      resolve({ conn, protocol });
    });
    req.once('response', (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d.slice(0, 4096)));
      res.on('end', () => reject(new StreamingError(`streaming server answered ${res.statusCode}: ${body.trim()}`, res.statusCode)));
    });
    req.once('error', (err) => reject(new StreamingError(`cannot reach the streaming server at ${target.origin}: ${err.message}`)));
    req.end();
  });
}

async function openStream(conn: SpdyConnection, headers: Record<string, string>): Promise<SpdyStream> {
  const block: HeaderBlock = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]]));
  const stream = conn.createStream(block);
  stream.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StreamingError(`the server did not accept the ${headers.streamtype} stream`)), STREAM_REPLY_TIMEOUT_MS);
  });
  try {
    await Promise.race([stream.replied, timeout]);
  } finally {
    clearTimeout(timer);
  }
  return stream;
}

export interface RemoteCommandOptions {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  tty: boolean;
  /** 'resize' events with the local terminal size (tty only). */
  resize?: EventEmitter<{ resize: [TerminalSize] }>;
  /** Sent once the streams are up (tty only). */
  initialSize?: TerminalSize;
  /** Offer only these protocols (tests of older versions); default v4…v1. */
  protocols?: readonly string[];
  /** https: whether the server's certificate must verify (default true). */
  rejectUnauthorized?: boolean;
}

/**
 * Runs an exec/attach session at `url` to its end. Resolves with the remote exit code (v4: exact; older
 * protocols: 0, or 1 with the server's message), rejects when the server reports an error.
 */
export async function runRemoteCommand(url: string, opts: RemoteCommandOptions): Promise<number> {
  const { conn, protocol } = await dialSpdy(url, opts.protocols ?? SPDY_REMOTECOMMAND_PROTOCOLS, { rejectUnauthorized: opts.rejectUnauthorized });
  try {
    const errorStream = await openStream(conn, { streamtype: 'error' });
    const errorText = collect(errorStream);
    const stdin = opts.stdin ? await openStream(conn, { streamtype: 'stdin' }) : undefined;
    const stdout = opts.stdout ? await openStream(conn, { streamtype: 'stdout' }) : undefined;
    const stderr = opts.stderr && !opts.tty ? await openStream(conn, { streamtype: 'stderr' }) : undefined;
    const resizable = protocol !== '' && protocol !== REMOTECOMMAND_V1 && protocol !== REMOTECOMMAND_V2;
    const resize = opts.tty && resizable ? await openStream(conn, { streamtype: 'resize' }) : undefined;
    const onResize = (size: TerminalSize): void => {
      if (resize && !resize.writableEnded) resize.write(encodeResize(size));
    };
    if (resize) {
      if (opts.initialSize) onResize(opts.initialSize);
      opts.resize?.on('resize', onResize);
    }
    if (stdin && opts.stdin) {
      opts.stdin.pipe(stdin);
    }
    const outputs = [pipeTo(stdout, opts.stdout), pipeTo(stderr, opts.stderr)];
    // The server closes the error stream after the command ended; output streams end (FIN) before that.
    const [text] = await Promise.all([errorText, ...outputs]);
    opts.resize?.off('resize', onResize);
    if (stdin && opts.stdin) opts.stdin.unpipe(stdin);
    const result = parseErrorStream(text, protocol === REMOTECOMMAND_V4);
    if (result.message !== undefined) {
      if (protocol !== REMOTECOMMAND_V4 && /non-zero exit code/.test(result.message)) return 1;
      throw new StreamingError(result.message);
    }
    return result.exitCode ?? 0;
  } finally {
    conn.close();
  }
}

function collect(stream: Readable): Promise<string> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    stream.on('data', (b: Buffer) => parts.push(b));
    stream.once('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    stream.once('close', () => resolve(Buffer.concat(parts).toString('utf8')));
  });
}

/** Copies a remote stream to a local writable without ending it (process.stdout must stay open). */
function pipeTo(from: Readable | undefined, to: Writable | undefined): Promise<void> {
  if (!from || !to) return Promise.resolve();
  return new Promise((resolve) => {
    from.pipe(to, { end: false });
    from.once('end', resolve);
    from.once('close', resolve);
  });
}

/** A port-forward session: one SPDY connection, one stream pair per forwarded TCP connection. */
export class PortForwardSession {
  private nextRequestId = 0;

  private constructor(readonly conn: SpdyConnection) {}

  static async open(url: string): Promise<PortForwardSession> {
    const { conn, protocol } = await dialSpdy(url, [PORTFORWARD_V1]);
    if (protocol !== PORTFORWARD_V1) {
      conn.destroy();
      throw new StreamingError(`streaming server did not agree to ${PORTFORWARD_V1} (answered "${protocol}")`);
    }
    return new PortForwardSession(conn);
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  /**
   * Relays `local` (an accepted TCP connection) to `port` in the pod. Resolves when both directions are
   * done; rejects with the server's message if it could not connect.
   */
  async forward(local: Socket | (Readable & Writable), port: number): Promise<void> {
    const requestid = String(this.nextRequestId++);
    const headers = { port: String(port), requestid };
    const error = await openStream(this.conn, { ...headers, streamtype: 'error' });
    // We never write to the error stream: half-close it at once, as kubectl does.
    error.end();
    const errorText = collect(error);
    const data = await openStream(this.conn, { ...headers, streamtype: 'data' });
    local.pipe(data);
    data.pipe(local);
    local.on('error', () => data.reset());
    const done = new Promise<void>((resolve) => {
      data.once('close', resolve);
      data.once('end', () => {
        // Remote side finished sending; wait for ours too (the pipe ends `data` when local ends).
        if (data.writableFinished) resolve();
        else data.once('finish', resolve);
      });
    });
    const message = await Promise.race([errorText.then((t) => t.trim()), done.then(() => '')]);
    if (message !== '') {
      data.reset();
      local.destroy();
      throw new StreamingError(message);
    }
    await done;
    const late = (await Promise.race([errorText, new Promise<string>((r) => setTimeout(() => r(''), 100))])).trim();
    if (late !== '') throw new StreamingError(late);
  }

  close(): void {
    this.conn.close();
  }
}
