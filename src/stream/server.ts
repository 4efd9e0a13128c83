// The daemon's streaming HTTP server. Exec/Attach/PortForward rpcs park their request under a single-use
// token and return a URL (http://addr:port/exec/<token>); the client then upgrades a connection at that URL
// to SPDY/3.1 or WebSocket, and we serve the matching protocol. Unknown, used or expired tokens get 404.
import * as http from 'node:http';
import * as https from 'node:https';
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import type { Socket, AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import { TokenCache } from './tokens.js';
import { SpdyConnection } from './spdy/connection.js';
import type { ExecRequest, AttachRequest, PortForwardRequest, StreamingBackends } from './backend.js';
import {
  PORTFORWARD_V1,
  PROTOCOL_HEADER,
  SPDY_REMOTECOMMAND_PROTOCOLS,
  WS_PORTFORWARD_PROTOCOLS,
  WS_REMOTECOMMAND_PROTOCOLS,
  headerList,
  negotiate,
} from './protocol.js';
import { serveRemoteCommandOverSpdy, servePortForwardOverSpdy } from './spdy-server.js';
import { serveRemoteCommandOverWebSocket, servePortForwardOverWebSocket } from './ws-server.js';

type Parked =
  | { kind: 'exec'; req: ExecRequest }
  | { kind: 'attach'; req: AttachRequest }
  | { kind: 'portforward'; req: PortForwardRequest };

const ROUTE = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)$/;

export type StreamingConfig = SkiffConfig['streaming'];

export class StreamingServer {
  private readonly tokens: TokenCache<Parked>;
  /** One ws server per sub-protocol, so the protocol we chose is the one ws answers with. */
  private readonly wss = new Map<string, WebSocketServer>();
  private server: http.Server | undefined;
  private baseUrl_ = '';
  private readonly sockets = new Set<Duplex>();

  constructor(
    private readonly config: StreamingConfig,
    private readonly backends: StreamingBackends,
    private readonly log: Logger,
  ) {
    this.tokens = new TokenCache(config.tokenTtlSeconds * 1000);
  }

  /** e.g. http://127.0.0.1:41234 (known after start). */
  get baseUrl(): string {
    return this.baseUrl_;
  }

  async start(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => this.onPlainRequest(req, res);
    let tls = false;
    if (this.config.tlsCert && this.config.tlsKey) {
      const [cert, key] = await Promise.all([readFile(this.config.tlsCert), readFile(this.config.tlsKey)]);
      this.server = https.createServer({ cert, key }, handler);
      tls = true;
    } else {
      this.server = http.createServer(handler);
    }
    const server = this.server;
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.config.port, this.config.address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    this.baseUrl_ = `${tls ? 'https' : 'http'}://${urlHost(addr.address)}:${addr.port}`;
    this.log.info({ url: this.baseUrl_ }, 'streaming server listening');
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  execUrl(req: ExecRequest): string {
    return this.park({ kind: 'exec', req });
  }

  attachUrl(req: AttachRequest): string {
    return this.park({ kind: 'attach', req });
  }

  portForwardUrl(req: PortForwardRequest): string {
    return this.park({ kind: 'portforward', req });
  }

  private park(p: Parked): string {
    return `${this.baseUrl_}/${p.kind}/${this.tokens.insert(p)}`;
  }

  private onPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    // Don't spend the token: a plain GET is a mistake, not a use.
    const known = ROUTE.test(new URL(req.url ?? '/', 'http://x').pathname);
    res.writeHead(known ? 400 : 404, { 'content-type': 'text/plain' });
    res.end(known ? 'this URL must be opened with an SPDY/3.1 or WebSocket upgrade\n' : 'not found\n');
  }

  private onUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => undefined);
    try {
      this.route(req, socket, head);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'streaming request failed');
      rawResponse(socket, 500, 'internal error\n');
    }
  }

  private route(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = ROUTE.exec(url.pathname);
    if (!m) {
      rawResponse(socket, 404, 'not found\n');
      return;
    }
    const parked = this.tokens.consume(m[2]);
    if (!parked || parked.kind !== m[1]) {
      rawResponse(socket, 404, 'unknown or expired streaming token: call Exec, Attach or PortForward again\n');
      return;
    }
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();
    if (upgrade === 'websocket') this.upgradeWebSocket(req, socket, head, parked, url);
    else if (upgrade === 'spdy/3.1') this.upgradeSpdy(req, socket, head, parked);
    else rawResponse(socket, 400, `unsupported upgrade "${upgrade}": use SPDY/3.1 or websocket\n`);
  }

  private upgradeSpdy(req: http.IncomingMessage, socket: Socket, head: Buffer, parked: Parked): void {
    const supported = parked.kind === 'portforward' ? [PORTFORWARD_V1] : SPDY_REMOTECOMMAND_PROTOCOLS;
    const offered = headerList(req.headers[PROTOCOL_HEADER]);
    const protocol = negotiate(offered, supported);
    if (protocol === undefined || (protocol === '' && parked.kind === 'portforward')) {
      rawResponse(socket, 403, `no supported stream protocol among [${offered.join(', ')}]; supported: ${supported.join(', ')}\n`, {
        [PROTOCOL_HEADER]: supported.join(', '),
      });
      return;
    }
    const lines = ['HTTP/1.1 101 Switching Protocols', 'Connection: Upgrade', 'Upgrade: SPDY/3.1'];
    if (protocol !== '') lines.push(`X-Stream-Protocol-Version: ${protocol}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    const conn = new SpdyConnection(socket, { server: true });
    conn.feed(head);
    this.log.debug({ kind: parked.kind, protocol, transport: 'spdy' }, 'streaming session');
    if (parked.kind === 'portforward') {
      servePortForwardOverSpdy(conn, parked.req, this.backends, this.log);
    } else {
      void serveRemoteCommandOverSpdy(conn, protocol, parked, this.backends, this.log);
    }
  }

  private upgradeWebSocket(req: http.IncomingMessage, socket: Socket, head: Buffer, parked: Parked, url: URL): void {
    const supported = parked.kind === 'portforward' ? WS_PORTFORWARD_PROTOCOLS : WS_REMOTECOMMAND_PROTOCOLS;
    const offered = headerList(req.headers['sec-websocket-protocol']);
    // Our preference order, unlike SPDY: the newest protocol the client offers.
    const protocol = supported.find((p) => offered.includes(p));
    if (!protocol) {
      rawResponse(socket, 400, `no supported websocket protocol among [${offered.join(', ')}]; supported: ${supported.join(', ')}\n`);
      return;
    }
    let ports: number[] = [];
    if (parked.kind === 'portforward') {
      ports = url.searchParams.getAll('ports').flatMap((p) => p.split(',')).map((p) => Number(p.trim()));
      if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
        rawResponse(socket, 400, 'port-forward over websocket needs ?ports=N[,N…] with ports from 1 to 65535\n');
        return;
      }
    }
    let wss = this.wss.get(protocol);
    if (!wss) {
      wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024, handleProtocols: () => protocol });
      this.wss.set(protocol, wss);
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      this.log.debug({ kind: parked.kind, protocol, transport: 'websocket' }, 'streaming session');
      if (parked.kind === 'portforward') servePortForwardOverWebSocket(ws, ports, parked.req, this.backends, this.log);
      else void serveRemoteCommandOverWebSocket(ws, parked, this.backends, this.log);
    });
  }
}

function urlHost(address: string): string {
  // A wildcard bind still needs a connectable host in the URL; loopback is the one we can vouch for.
  if (address === '0.0.0.0') return '127.0.0.1';
  if (address === '::') return '[::1]';
  return address.includes(':') ? `[${address}]` : address;
}

function rawResponse(socket: Socket, status: number, body: string, headers: Record<string, string> = {}): void {
  const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}`, 'Content-Type: text/plain; charset=utf-8', `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}
