// Serves exec/attach and port-forward on an accepted SPDY connection, as kubelet's streaming library does:
// the client opens one stream per role (streamtype header), the server accepts each with SYN_REPLY.
import { finished } from 'node:stream/promises';
import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import type { SpdyConnection, SpdyStream } from './spdy/connection.js';
import { RstStatus } from './spdy/frames.js';
import { ResizeEvents, type PortForwardRequest, type StreamingBackends } from './backend.js';
import { REMOTECOMMAND_V4, REMOTECOMMAND_V1, REMOTECOMMAND_V2, ResizeDecoder, type StreamType } from './protocol.js';
import { errorStreamPayload, runRemoteCommand, type RemoteCommand } from './remotecommand.js';

/** How long a client gets to open every stream it needs (kubelet: 30 s). */
export const STREAM_CREATION_TIMEOUT_MS = 30_000;

function expectedStreams(cmd: RemoteCommand, protocol: string): Set<StreamType> {
  const want = new Set<StreamType>(['error']);
  const { req } = cmd;
  if (req.stdin) want.add('stdin');
  if (req.stdout) want.add('stdout');
  if (req.stderr && !req.tty) want.add('stderr');
  const resizable = protocol !== REMOTECOMMAND_V1 && protocol !== REMOTECOMMAND_V2 && protocol !== '';
  if (req.tty && resizable) want.add('resize');
  return want;
}

export async function serveRemoteCommandOverSpdy(
  conn: SpdyConnection,
  protocol: string,
  cmd: RemoteCommand,
  backends: StreamingBackends,
  log: Logger,
): Promise<void> {
  const want = expectedStreams(cmd, protocol);
  const got = new Map<StreamType, SpdyStream>();
  const ready = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), STREAM_CREATION_TIMEOUT_MS);
    const check = (): void => {
      if ([...want].every((t) => got.has(t))) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    conn.on('stream', (stream: SpdyStream) => {
      const type = stream.header('streamtype') as StreamType | undefined;
      if (type === undefined || !want.has(type) || got.has(type)) {
        stream.reset(RstStatus.REFUSED_STREAM);
        return;
      }
      stream.reply();
      got.set(type, stream);
      check();
    });
    conn.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
    check();
  });
  if (!(await ready)) {
    log.debug({ protocol, want: [...want], got: [...got.keys()] }, 'streaming client did not open its streams');
    conn.destroy();
    return;
  }

  const abort = new AbortController();
  conn.once('close', () => abort.abort());
  const resize = new ResizeEvents();
  const resizeStream = got.get('resize');
  if (resizeStream) {
    const decoder = new ResizeDecoder();
    resizeStream.on('data', (chunk: Buffer) => {
      for (const size of decoder.push(chunk)) resize.push(size);
    });
    resizeStream.on('error', () => undefined);
  }
  for (const s of got.values()) s.on('error', () => undefined);

  const outcome = await runRemoteCommand(
    cmd,
    { stdin: got.get('stdin'), stdout: got.get('stdout'), stderr: got.get('stderr'), resize, signal: abort.signal },
    backends,
  );
  if (outcome.error !== undefined) log.info({ container: cmd.req.containerId, err: outcome.error }, `${cmd.kind} failed`);
  const errorStream = got.get('error')!;
  if (!conn.closed) {
    errorStream.end(errorStreamPayload(outcome, protocol === REMOTECOMMAND_V4));
    conn.close();
  }
}

/**
 * Port-forward: for each forwarded connection the client opens an error stream and a data stream sharing a
 * requestid (older clients: none, then ids are paired as data = error + 2).
 */
export function servePortForwardOverSpdy(conn: SpdyConnection, req: PortForwardRequest, backends: StreamingBackends, log: Logger): void {
  const pairs = new Map<string, { error?: SpdyStream; data?: SpdyStream; timer: NodeJS.Timeout }>();
  const abort = new AbortController();
  conn.once('close', () => {
    abort.abort();
    for (const p of pairs.values()) clearTimeout(p.timer);
  });

  conn.on('stream', (stream: SpdyStream) => {
    stream.on('error', () => undefined);
    const type = stream.header('streamtype');
    const port = Number(stream.header('port'));
    let requestId = stream.header('requestid');
    if (requestId === undefined) requestId = String(type === 'data' ? stream.id - 2 : stream.id);
    if ((type !== 'data' && type !== 'error') || !Number.isInteger(port) || port < 1 || port > 65535) {
      stream.reset(RstStatus.REFUSED_STREAM);
      return;
    }
    stream.reply();
    let pair = pairs.get(requestId);
    if (!pair) {
      const id = requestId;
      pair = {
        timer: setTimeout(() => {
          // Half a pair for too long: the client is broken; free the stream.
          const p = pairs.get(id);
          pairs.delete(id);
          p?.error?.reset();
          p?.data?.reset();
        }, STREAM_CREATION_TIMEOUT_MS),
      };
      pairs.set(requestId, pair);
    }
    if (pair[type]) {
      stream.reset(RstStatus.PROTOCOL_ERROR);
      return;
    }
    pair[type] = stream;
    if (pair.error && pair.data) {
      clearTimeout(pair.timer);
      pairs.delete(requestId);
      void forwardOne(pair.data, pair.error, port, req, backends, abort.signal, log);
    }
  });
}

async function forwardOne(
  data: SpdyStream,
  error: SpdyStream,
  port: number,
  req: PortForwardRequest,
  backends: StreamingBackends,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  // The client only writes to the error stream by closing it.
  error.resume();
  if (req.ports.length > 0 && !req.ports.includes(port)) {
    error.end(`port ${port} was not named in the PortForward request for pod ${req.podSandboxId}`);
    data.reset();
    return;
  }
  let target;
  try {
    target = await backends.portForward.dial(req.podSandboxId, port, signal);
  } catch (err) {
    log.debug({ pod: req.podSandboxId, port, err: errorMessage(err) }, 'port-forward dial failed');
    error.end(`error forwarding port ${port} to pod ${req.podSandboxId}: ${errorMessage(err)}`);
    data.reset();
    return;
  }
  target.on('error', (err) => {
    if (!error.writableEnded) error.end(`error forwarding port ${port} to pod ${req.podSandboxId}: ${err.message}`);
    data.reset();
  });
  // A reset (client gone, or connection lost) abandons the pod side too.
  data.once('close', () => {
    if (data.isReset) target.destroy();
  });
  data.pipe(target);
  target.pipe(data);
  // Both directions done (or either side reset/failed): release both streams.
  await Promise.all([finished(data).catch(() => undefined), finished(target).catch(() => undefined)]);
  if (!error.writableEnded) error.end();
  target.destroy();
}
