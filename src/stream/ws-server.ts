// Serves exec/attach and port-forward over WebSocket. Every message starts with a channel number (one byte,
// or one ASCII digit in the base64 protocols, whose payload is then base64 text).
// remotecommand channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255 = "close channel N".
// port-forward: port i uses channel 2i (data) and 2i+1 (error); each starts with the port as 2 bytes LE.
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { WebSocket, RawData } from 'ws';
import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import { ResizeEvents, type PortForwardRequest, type StreamingBackends } from './backend.js';
import { Channel, CLOSE_CHANNEL, REMOTECOMMAND_V5, ResizeDecoder, isBase64Protocol } from './protocol.js';
import { errorStreamPayload, runRemoteCommand, type RemoteCommand } from './remotecommand.js';

/** Frames channel messages for one WebSocket, in the binary or base64 flavour of the negotiated protocol. */
export class ChannelSocket {
  readonly base64: boolean;

  constructor(
    readonly ws: WebSocket,
    readonly protocol: string,
  ) {
    this.base64 = isBase64Protocol(protocol);
  }

  send(channel: number, data: Buffer | string, cb?: (err?: Error) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) {
      cb?.(new Error('websocket closed'));
      return;
    }
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    if (this.base64) this.ws.send(String.fromCharCode(48 + channel) + payload.toString('base64'), cb);
    else this.ws.send(Buffer.concat([Buffer.from([channel]), payload]), { binary: true }, cb);
  }

  /** Decodes an incoming message; undefined for an empty or malformed one. */
  decode(raw: RawData, isBinary: boolean): { channel: number; data: Buffer } | undefined {
    const buf = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw as ArrayBuffer);
    if (buf.length === 0) return undefined;
    if (this.base64 && !isBinary) {
      const text = buf.toString('latin1');
      return { channel: text.charCodeAt(0) - 48, data: Buffer.from(text.slice(1), 'base64') };
    }
    return { channel: buf[0], data: buf.subarray(1) };
  }

  /** A Writable that sends each chunk on `channel`, completing when the socket has taken it. */
  writable(channel: number): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => this.send(channel, chunk, (err) => cb(err ?? null)),
    });
  }
}

export async function serveRemoteCommandOverWebSocket(
  ws: WebSocket,
  cmd: RemoteCommand,
  backends: StreamingBackends,
  log: Logger,
): Promise<void> {
  const sock = new ChannelSocket(ws, ws.protocol);
  const { req } = cmd;
  const abort = new AbortController();
  const stdin = req.stdin ? new PassThrough() : undefined;
  const stdout = req.stdout ? sock.writable(Channel.stdout) : undefined;
  const stderr = req.stderr && !req.tty ? sock.writable(Channel.stderr) : undefined;
  for (const s of [stdin, stdout, stderr]) s?.on('error', () => undefined);
  const resize = new ResizeEvents();
  const decoder = new ResizeDecoder();

  ws.on('message', (raw, isBinary) => {
    const msg = sock.decode(raw, isBinary);
    if (!msg) return;
    if (msg.channel === Channel.stdin && stdin && !stdin.writableEnded) {
      if (!stdin.write(msg.data)) {
        ws.pause();
        stdin.once('drain', () => ws.resume());
      }
    } else if (msg.channel === Channel.resize) {
      for (const size of decoder.push(msg.data)) resize.push(size);
    } else if (msg.channel === CLOSE_CHANNEL && ws.protocol === REMOTECOMMAND_V5 && msg.data[0] === Channel.stdin) {
      stdin?.end();
    }
  });
  ws.on('error', () => undefined);
  ws.once('close', () => {
    abort.abort();
    stdin?.end();
  });

  // Tell the client the streams are ready: an empty message on the lowest writable channel (as kubelet).
  sock.send(stdout ? Channel.stdout : stderr ? Channel.stderr : Channel.error, Buffer.alloc(0));

  const outcome = await runRemoteCommand(cmd, { stdin, stdout, stderr, resize, signal: abort.signal }, backends);
  if (outcome.error !== undefined) log.info({ container: req.containerId, err: outcome.error }, `${cmd.kind} failed`);
  const statusJson = ws.protocol === REMOTECOMMAND_V5 || ws.protocol.startsWith('v4.');
  const payload = errorStreamPayload(outcome, statusJson);
  if (payload !== '') await new Promise<void>((resolve) => sock.send(Channel.error, payload, () => resolve()));
  if (ws.readyState === ws.OPEN) ws.close(1000);
}

export function servePortForwardOverWebSocket(
  ws: WebSocket,
  ports: number[],
  req: PortForwardRequest,
  backends: StreamingBackends,
  log: Logger,
): void {
  const sock = new ChannelSocket(ws, ws.protocol);
  const abort = new AbortController();
  const targets = new Map<number, { write(b: Buffer): void; end(): void }>();
  ws.on('error', () => undefined);
  ws.once('close', () => abort.abort());

  ports.forEach((port, i) => {
    const dataCh = 2 * i;
    const errCh = 2 * i + 1;
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16LE(port);
    sock.send(dataCh, prefix);
    sock.send(errCh, prefix);
    const fail = (why: string): void => sock.send(errCh, `error forwarding port ${port} to pod ${req.podSandboxId}: ${why}`);
    if (req.ports.length > 0 && !req.ports.includes(port)) {
      fail('port was not named in the PortForward request');
      return;
    }
    // Bytes that arrive before the dial completes are queued by a PassThrough.
    const toPod = new PassThrough();
    targets.set(dataCh, toPod);
    void (async () => {
      try {
        const target = await backends.portForward.dial(req.podSandboxId, port, abort.signal);
        abort.signal.addEventListener('abort', () => target.destroy());
        target.on('error', (err) => fail(err.message));
        toPod.pipe(target);
        target.pipe(sock.writable(dataCh));
        await finished(target).catch(() => undefined);
      } catch (err) {
        log.debug({ pod: req.podSandboxId, port, err: errorMessage(err) }, 'port-forward dial failed');
        fail(errorMessage(err));
      }
    })();
  });

  ws.on('message', (raw, isBinary) => {
    const msg = sock.decode(raw, isBinary);
    if (msg && msg.data.length > 0) targets.get(msg.channel)?.write(msg.data);
  });
}
