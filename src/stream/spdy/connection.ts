// A SPDY/3.1 session over an upgraded HTTP/1.1 socket, both roles (server for the streaming server,
// client for `skiff exec/attach/port-forward`), interoperable with Go's spdystream as kubelet, crictl and
// kubectl use it:
// - streams carry only k8s headers (streamtype, port, requestid): no :method/:path is required;
// - spdystream never sends WINDOW_UPDATE and ignores ours, so no SPDY flow control is applied in either
//   direction. Back-pressure is TCP's: a stream's write completes when the socket takes the bytes, and a
//   stream whose reader is slow pauses the socket.
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { EventEmitter } from 'node:events';
import {
  FrameReader,
  FrameType,
  FLAG_FIN,
  RstStatus,
  dataFrameHeader,
  goAwayFrame,
  pingFrame,
  rstStreamFrame,
  synReplyFrame,
  synStreamFrame,
  type RawFrame,
} from './frames.js';
import { HeaderCompressor, HeaderDecompressor, ProtocolError, type HeaderBlock } from './headers.js';

/** Data frames we send are cut at this size (Go's io.Copy uses 32 KiB too). */
const DATA_CHUNK = 32 * 1024;
/** Per-stream buffering before back-pressure applies (each way). */
const STREAM_BUFFER = 256 * 1024;

export class SpdyStream extends Duplex {
  /** Set once the peer answered our SYN_STREAM (client role). */
  readonly replied: Promise<HeaderBlock>;
  private resolveReply!: (h: HeaderBlock) => void;
  private rejectReply!: (e: Error) => void;
  private remoteEnded = false;
  private localEnded = false;
  private wasReset = false;

  constructor(
    private readonly conn: SpdyConnection,
    readonly id: number,
    readonly headers: HeaderBlock,
  ) {
    // Frames are up to 32 KiB: a 16 KiB buffer would pause the socket after every frame.
    super({ allowHalfOpen: true, readableHighWaterMark: STREAM_BUFFER, writableHighWaterMark: STREAM_BUFFER });
    this.replied = new Promise((res, rej) => {
      this.resolveReply = res;
      this.rejectReply = rej;
    });
    // Nobody may await `replied` (server side); don't let its rejection go unhandled.
    this.replied.catch(() => undefined);
  }

  /** First value of a header, e.g. stream.header('streamtype'). */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }

  /** Server role: accept the stream (SYN_REPLY). */
  reply(headers: HeaderBlock = {}): void {
    this.conn.sendSynReply(this.id, headers);
  }

  /** Abort the stream in both directions (RST_STREAM CANCEL). */
  reset(status: number = RstStatus.CANCEL): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.conn.sendReset(this.id, status);
    this.conn.forget(this.id);
    this.destroy();
  }

  get isReset(): boolean {
    return this.wasReset;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.conn.sendData(this.id, chunk, false, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.localEnded = true;
    this.conn.sendData(this.id, Buffer.alloc(0), true, cb);
    this.maybeForget();
  }

  override _read(): void {
    this.conn.resumeReading();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.rejectReply(err ?? new Error('stream closed before it was accepted'));
    cb(err);
  }

  /** @internal frames from the connection */
  onReply(headers: HeaderBlock): void {
    this.resolveReply(headers);
  }

  /** @internal */
  onData(payload: Buffer, fin: boolean): void {
    if (this.remoteEnded) return;
    if (payload.length > 0 && !this.push(payload)) this.conn.pauseReading();
    if (fin) this.onRemoteFin();
  }

  /** @internal */
  onRemoteFin(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    this.push(null);
    this.maybeForget();
  }

  /** @internal the peer reset the stream, or the connection went away */
  onReset(reason: string): void {
    this.wasReset = true;
    this.rejectReply(new Error(reason));
    if (!this.remoteEnded) {
      this.remoteEnded = true;
      this.push(null);
    }
    this.destroy();
  }

  private maybeForget(): void {
    if (this.remoteEnded && this.localEnded) this.conn.forget(this.id);
  }
}

export interface SpdyConnectionOptions {
  server: boolean;
}

/**
 * Events: 'stream' (SpdyStream) for each stream the peer opens; 'close' once the socket is gone.
 */
export class SpdyConnection extends EventEmitter {
  private readonly reader = new FrameReader();
  private readonly compressor = new HeaderCompressor();
  private readonly decompressor = new HeaderDecompressor();
  private readonly streams = new Map<number, SpdyStream>();
  private nextStreamId: number;
  private lastPeerStreamId = 0;
  private nextPingId: number;
  private readonly pings = new Map<number, () => void>();
  /** Frames parsed but not yet handled: header blocks are inflated asynchronously, in order. */
  private readonly inbox: RawFrame[] = [];
  private draining = false;
  private paused = 0;
  private closedFlag = false;
  private goingAway = false;
  private goneReason: string | undefined;
  private readonly drainWaiters: (() => void)[] = [];

  constructor(
    readonly socket: Socket,
    private readonly opts: SpdyConnectionOptions,
  ) {
    super();
    // SPDY: client-initiated streams are odd, server-initiated even; same for pings.
    this.nextStreamId = opts.server ? 2 : 1;
    this.nextPingId = opts.server ? 2 : 1;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onSocketData(chunk));
    socket.on('drain', () => {
      for (const waiter of this.drainWaiters.splice(0)) waiter();
    });
    socket.on('error', () => this.teardown('connection error'));
    // Frames already read are still handled (they may carry the last stdin bytes) before streams close.
    socket.on('end', () => this.peerGone('connection ended by peer'));
    socket.on('close', () => this.peerGone('connection closed'));
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Feeds bytes that arrived with the HTTP upgrade, before the socket was handed over. */
  feed(head: Buffer): void {
    if (head.length > 0) this.onSocketData(head);
  }

  /** Client role mostly: opens a stream. Await `stream.replied` for the peer's acceptance. */
  createStream(headers: HeaderBlock, opts: { fin?: boolean } = {}): SpdyStream {
    if (this.closedFlag) throw new Error('SPDY connection is closed');
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, headers);
    this.streams.set(id, stream);
    this.write(synStreamFrame(id, opts.fin ? FLAG_FIN : 0, this.compressor.compress(headers)));
    if (opts.fin) stream.end();
    return stream;
  }

  /** Round-trip time of a PING, e.g. to keep the connection alive. */
  ping(): Promise<void> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    return new Promise((resolve) => {
      this.pings.set(id, resolve);
      this.write(pingFrame(id));
    });
  }

  /** Says goodbye (GOAWAY) once everything queued is written, then closes the socket. */
  close(): void {
    if (this.closedFlag) return;
    if (!this.goingAway) {
      this.goingAway = true;
      this.write(goAwayFrame(this.lastPeerStreamId));
    }
    this.socket.end();
    // A peer that never closes its side must not keep us waiting forever.
    setTimeout(() => this.socket.destroy(), 5_000).unref();
  }

  /** Drops the socket at once (client gone, or fatal error). */
  destroy(reason = 'connection destroyed'): void {
    this.socket.destroy();
    this.teardown(reason);
  }

  /** @internal */
  sendSynReply(id: number, headers: HeaderBlock): void {
    this.write(synReplyFrame(id, 0, this.compressor.compress(headers)));
  }

  /** @internal */
  sendReset(id: number, status: number): void {
    this.write(rstStreamFrame(id, status));
  }

  /** @internal writes data frames; cb fires when the socket has taken them (back-pressure). */
  sendData(id: number, data: Buffer, fin: boolean, cb: (err?: Error | null) => void): void {
    if (this.closedFlag) {
      cb(new Error('SPDY connection is closed'));
      return;
    }
    let ok = true;
    if (data.length === 0) {
      ok = this.write(dataFrameHeader(id, fin ? FLAG_FIN : 0, 0));
    } else {
      for (let at = 0; at < data.length; at += DATA_CHUNK) {
        const piece = data.subarray(at, at + DATA_CHUNK);
        const last = at + DATA_CHUNK >= data.length;
        this.socket.cork();
        this.write(dataFrameHeader(id, fin && last ? FLAG_FIN : 0, piece.length));
        ok = this.write(piece);
        this.socket.uncork();
      }
    }
    if (ok) cb();
    else this.drainWaiters.push(() => cb());
  }

  /** @internal */
  forget(id: number): void {
    this.streams.delete(id);
    // A stream that goes away can no longer ask for more: don't leave the socket paused on its behalf.
    this.resumeReading();
  }

  /** @internal a stream's reader is full: stop reading the socket until it asks for more. */
  pauseReading(): void {
    this.paused++;
    this.socket.pause();
  }

  /** @internal */
  resumeReading(): void {
    if (this.paused === 0) return;
    this.paused = 0;
    if (!this.closedFlag) this.socket.resume();
  }

  private write(buf: Buffer): boolean {
    if (this.closedFlag || this.socket.destroyed || this.socket.writableEnded) return true;
    return this.socket.write(buf);
  }

  private onSocketData(chunk: Buffer): void {
    let frames: RawFrame[];
    try {
      frames = this.reader.push(chunk);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.inbox.push(...frames);
    void this.drain();
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.inbox.length > 0 && !this.closedFlag) {
        await this.handle(this.inbox.shift()!);
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.draining = false;
    }
    if (this.goneReason !== undefined && this.inbox.length === 0) this.teardown(this.goneReason);
  }

  private peerGone(reason: string): void {
    this.goneReason ??= reason;
    if (!this.draining && this.inbox.length === 0) this.teardown(reason);
  }

  private fail(err: unknown): void {
    if (err instanceof ProtocolError && !this.closedFlag) {
      this.write(goAwayFrame(this.lastPeerStreamId, 1));
    }
    this.destroy(err instanceof Error ? err.message : String(err));
  }

  private async handle(frame: RawFrame): Promise<void> {
    if (!frame.control) {
      const stream = this.streams.get(frame.streamId);
      if (!stream) {
        this.sendReset(frame.streamId, RstStatus.INVALID_STREAM);
        return;
      }
      stream.onData(frame.payload, (frame.flags & FLAG_FIN) !== 0);
      return;
    }
    const p = frame.payload;
    const fin = (frame.flags & FLAG_FIN) !== 0;
    switch (frame.type) {
      case FrameType.SYN_STREAM: {
        if (p.length < 10) throw new ProtocolError('short SYN_STREAM');
        const id = p.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.decompressor.decompress(p.subarray(10));
        if (this.streams.has(id) || id <= this.lastPeerStreamId) {
          this.sendReset(id, RstStatus.PROTOCOL_ERROR);
          return;
        }
        this.lastPeerStreamId = id;
        if (this.goingAway) {
          this.sendReset(id, RstStatus.REFUSED_STREAM);
          return;
        }
        const stream = new SpdyStream(this, id, headers);
        this.streams.set(id, stream);
        if (fin) stream.onRemoteFin();
        this.emit('stream', stream);
        return;
      }
      case FrameType.SYN_REPLY: {
        if (p.length < 4) throw new ProtocolError('short SYN_REPLY');
        const id = p.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.decompressor.decompress(p.subarray(4));
        const stream = this.streams.get(id);
        stream?.onReply(headers);
        if (fin) stream?.onRemoteFin();
        return;
      }
      case FrameType.HEADERS: {
        if (p.length < 4) throw new ProtocolError('short HEADERS');
        // Must still be inflated to keep the zlib stream in step; k8s sends none.
        await this.decompressor.decompress(p.subarray(4));
        if (fin) this.streams.get(p.readUInt32BE(0) & 0x7fffffff)?.onRemoteFin();
        return;
      }
      case FrameType.RST_STREAM: {
        if (p.length < 8) throw new ProtocolError('short RST_STREAM');
        const id = p.readUInt32BE(0) & 0x7fffffff;
        const stream = this.streams.get(id);
        this.streams.delete(id);
        stream?.onReset(`stream reset by peer (status ${p.readUInt32BE(4)})`);
        return;
      }
      case FrameType.PING: {
        if (p.length < 4) throw new ProtocolError('short PING');
        const id = p.readUInt32BE(0);
        const ours = (id % 2 === 0) === this.opts.server;
        if (ours) {
          this.pings.get(id)?.();
          this.pings.delete(id);
        } else {
          this.write(pingFrame(id));
        }
        return;
      }
      case FrameType.GOAWAY:
        // No new streams from the peer; existing ones finish normally.
        this.goingAway = true;
        return;
      case FrameType.SETTINGS:
      case FrameType.WINDOW_UPDATE:
        // No flow control (see the file comment); settings carry nothing we use.
        return;
      default:
        // SPDY says unknown control frames are ignored.
        return;
    }
  }

  private teardown(reason: string): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.decompressor.close();
    for (const stream of [...this.streams.values()]) stream.onReset(reason);
    this.streams.clear();
    for (const resolve of this.pings.values()) resolve();
    this.pings.clear();
    for (const waiter of this.drainWaiters.splice(0)) waiter();
    this.emit('close', reason);
  }
}
