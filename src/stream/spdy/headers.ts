// SPDY/3 header blocks: a count, then length-prefixed name/value pairs, carried in one zlib stream per
// direction per connection, primed with the SPDY dictionary.
//
// Sending: SPDY needs a zlib stream, not compression. We emit *stored* deflate blocks, which can be made
// synchronously with no zlib state beyond "header written", so frame order stays trivially correct. Header
// blocks here are a few dozen bytes, so compressing them would buy nothing.
// Receiving: peers (Go's spdystream) really compress, with a sync flush per block, so we inflate with
// Node's zlib primed with the dictionary; that is asynchronous, and the connection awaits it in order.
import { createInflate, constants as zlibConstants, type Inflate } from 'node:zlib';
import { SPDY3_DICTIONARY } from './dictionary.js';

/** Kubernetes streams carry a few short headers; anything near this is an attack or a bug. */
export const MAX_HEADER_BLOCK_BYTES = 256 * 1024;

/** Header names are lowercase on the wire; several values of one name are joined by NUL. */
export type HeaderBlock = Record<string, string[]>;

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpdyProtocolError';
  }
}

function adler32(data: Buffer): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length; i++) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

export function encodeHeaderBlock(headers: HeaderBlock): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const entries = Object.entries(headers).filter(([, v]) => v.length > 0);
  parts.push(u32(entries.length));
  for (const [name, values] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(values.join('\0'), 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(raw: Buffer): HeaderBlock {
  const fail = (): never => {
    throw new ProtocolError('malformed SPDY header block');
  };
  if (raw.length < 4) fail();
  const count = raw.readUInt32BE(0);
  let at = 4;
  const out: HeaderBlock = {};
  const take = (): string => {
    if (at + 4 > raw.length) fail();
    const len = raw.readUInt32BE(at);
    at += 4;
    if (at + len > raw.length) fail();
    const s = raw.toString('utf8', at, at + len);
    at += len;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const name = take().toLowerCase();
    const value = take();
    (out[name] ??= []).push(...value.split('\0'));
  }
  return out;
}

/** An empty, non-final stored block: what a zlib sync flush ends with. */
export const SYNC_FLUSH_MARKER = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);

/** Makes the sending side's zlib stream out of stored blocks (see the file comment). */
export class HeaderCompressor {
  private started = false;

  compress(headers: HeaderBlock): Buffer {
    const plain = encodeHeaderBlock(headers);
    const parts: Buffer[] = [];
    if (!this.started) {
      this.started = true;
      // zlib header: deflate with a 32 KiB window, FDICT set, check bits so the 16-bit value is 0 mod 31.
      const cmf = 0x78;
      let flg = 0x20;
      flg += 31 - ((cmf * 256 + flg) % 31);
      const head = Buffer.alloc(6);
      head[0] = cmf;
      head[1] = flg;
      head.writeUInt32BE(adler32(SPDY3_DICTIONARY), 2);
      parts.push(head);
    }
    // plain is never empty: it starts with the 4-byte pair count.
    for (let at = 0; at < plain.length; at += 0xffff) {
      const chunk = plain.subarray(at, at + 0xffff);
      const block = Buffer.alloc(5);
      block[0] = 0; // BFINAL=0, BTYPE=00 (stored); the rest of the byte is padding
      block.writeUInt16LE(chunk.length, 1);
      block.writeUInt16LE(~chunk.length & 0xffff, 3);
      parts.push(block, chunk);
    }
    // End every header block with an empty stored block, as a zlib sync flush does. Go's inflater (and so
    // spdystream) only hands out a stored block's bytes when it reaches that marker; without it, it reads
    // on into the next frame, fails, and every later header block on the connection is refused.
    parts.push(SYNC_FLUSH_MARKER);
    return Buffer.concat(parts);
  }
}

/** Inflates the peer's header blocks, one continuous zlib stream per connection. */
export class HeaderDecompressor {
  private readonly inflate: Inflate;
  private output: Buffer[] = [];
  private outputBytes = 0;
  private failure: Error | undefined;

  constructor() {
    this.inflate = createInflate({ dictionary: SPDY3_DICTIONARY });
    this.inflate.on('data', (b: Buffer) => {
      this.outputBytes += b.length;
      // A tiny compressed block can inflate to gigabytes: refuse absurd header blocks.
      if (this.outputBytes > MAX_HEADER_BLOCK_BYTES) {
        this.failure ??= new Error(`header block larger than ${MAX_HEADER_BLOCK_BYTES} bytes`);
        this.output = [];
        return;
      }
      this.output.push(b);
    });
    this.inflate.on('error', (err: Error) => {
      this.failure = err;
    });
  }

  async decompress(block: Buffer): Promise<HeaderBlock> {
    if (this.failure) throw new ProtocolError(`header decompression failed: ${this.failure.message}`);
    // After a zlib error the flush callback never fires: wait for whichever comes first.
    await new Promise<void>((resolve) => {
      const onError = (): void => resolve();
      this.inflate.once('error', onError);
      this.inflate.write(block);
      this.inflate.flush(zlibConstants.Z_SYNC_FLUSH, () => {
        this.inflate.off('error', onError);
        resolve();
      });
    });
    if (this.failure) throw new ProtocolError(`header decompression failed: ${(this.failure as Error).message}`);
    const plain = Buffer.concat(this.output);
    this.output = [];
    this.outputBytes = 0;
    return decodeHeaderBlock(plain);
  }

  close(): void {
    this.inflate.destroy();
  }
}
