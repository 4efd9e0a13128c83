// Pure pieces of the streaming protocols: SPDY framing and header blocks, resize parsing, status payloads,
// the token cache.
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { inflateSync, createDeflate, constants as zc } from 'node:zlib';
import { SPDY3_DICTIONARY } from '../../src/stream/spdy/dictionary.js';
import { HeaderCompressor, HeaderDecompressor, MAX_HEADER_BLOCK_BYTES, SYNC_FLUSH_MARKER, decodeHeaderBlock, encodeHeaderBlock } from '../../src/stream/spdy/headers.js';
import { FrameReader, synStreamFrame, dataFrameHeader, FLAG_FIN, FrameType } from '../../src/stream/spdy/frames.js';
import { ResizeDecoder, exitStatus, parseErrorStream, negotiate, headerList } from '../../src/stream/protocol.js';
import { errorStreamPayload } from '../../src/stream/remotecommand.js';
import { TokenCache } from '../../src/stream/tokens.js';

describe('SPDY/3 header blocks', () => {
  it('carries the exact SPDY/3 dictionary', () => {
    expect(SPDY3_DICTIONARY.length).toBe(1423);
    expect(createHash('sha256').update(SPDY3_DICTIONARY).digest('hex')).toBe('51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02');
  });

  it('emits a zlib stream that a standard inflater with the dictionary reads, block after block', () => {
    const c = new HeaderCompressor();
    const a = c.compress({ streamtype: ['error'] });
    const b = c.compress({ streamtype: ['data'], port: ['8080'], requestid: ['3'] });
    // each block ends like a sync flush (Go's inflater needs it: see the interop test with spdystream)
    expect(a.subarray(-5)).toEqual(SYNC_FLUSH_MARKER);
    expect(b.subarray(-5)).toEqual(SYNC_FLUSH_MARKER);
    const plain = inflateSync(Buffer.concat([a, b]), { dictionary: SPDY3_DICTIONARY, finishFlush: zc.Z_SYNC_FLUSH });
    const first = encodeHeaderBlock({ streamtype: ['error'] });
    expect(decodeHeaderBlock(plain.subarray(0, first.length))).toEqual({ streamtype: ['error'] });
    expect(decodeHeaderBlock(plain.subarray(first.length))).toEqual({ streamtype: ['data'], port: ['8080'], requestid: ['3'] });
  });

  it('inflates a really compressed peer stream (as Go sends it), one sync-flushed block at a time', async () => {
    const deflate = createDeflate({ dictionary: SPDY3_DICTIONARY });
    const out: Buffer[] = [];
    deflate.on('data', (b: Buffer) => out.push(b));
    const flushed = async (block: Buffer): Promise<Buffer> => {
      deflate.write(block);
      await new Promise<void>((r) => deflate.flush(zc.Z_SYNC_FLUSH, () => r()));
      return Buffer.concat(out.splice(0));
    };
    const a = await flushed(encodeHeaderBlock({ streamtype: ['stdin'] }));
    const b = await flushed(encodeHeaderBlock({ streamtype: ['stdout'], 'x-multi': ['a', 'b'] }));
    const d = new HeaderDecompressor();
    expect(await d.decompress(a)).toEqual({ streamtype: ['stdin'] });
    expect(await d.decompress(b)).toEqual({ streamtype: ['stdout'], 'x-multi': ['a', 'b'] });
    await expect(d.decompress(Buffer.from('garbage!'))).rejects.toThrow(/decompression failed/);
    d.close();
  });

  it('fails (rather than hangs) on a corrupt zlib stream', async () => {
    // Found in review: zlib never calls the flush callback after an error, so decompress() waited forever.
    const d = new HeaderDecompressor();
    const t0 = Date.now();
    await expect(d.decompress(Buffer.from('garbage!'))).rejects.toThrow(/decompression failed/);
    expect(Date.now() - t0).toBeLessThan(1000);
    d.close();
  });

  it('refuses a header block that inflates past the limit', async () => {
    const deflate = createDeflate({ dictionary: SPDY3_DICTIONARY });
    const out: Buffer[] = [];
    deflate.on('data', (b: Buffer) => out.push(b));
    deflate.write(encodeHeaderBlock({ x: ['a'.repeat(MAX_HEADER_BLOCK_BYTES + 1)] }));
    await new Promise<void>((r) => deflate.flush(zc.Z_SYNC_FLUSH, () => r()));
    const d = new HeaderDecompressor();
    await expect(d.decompress(Buffer.concat(out))).rejects.toThrow(/larger than/);
    d.close();
  });

  it('rejects a truncated header block', () => {
    const block = encodeHeaderBlock({ streamtype: ['error'] });
    expect(() => decodeHeaderBlock(block.subarray(0, block.length - 2))).toThrow(/malformed/);
  });
});

describe('SPDY/3 frames', () => {
  it('cuts frames out of arbitrary chunks', () => {
    const c = new HeaderCompressor();
    const syn = synStreamFrame(1, FLAG_FIN, c.compress({ streamtype: ['error'] }));
    const data = Buffer.concat([dataFrameHeader(1, 0, 5), Buffer.from('hello')]);
    const all = Buffer.concat([syn, data]);
    const r = new FrameReader();
    const frames = [];
    for (let i = 0; i < all.length; i += 3) frames.push(...r.push(all.subarray(i, i + 3)));
    expect(frames).toHaveLength(2);
    expect(frames[0]).toMatchObject({ control: true, type: FrameType.SYN_STREAM, flags: FLAG_FIN });
    expect(frames[1]).toMatchObject({ control: false, streamId: 1, flags: 0 });
    expect(frames[1].payload.toString()).toBe('hello');
  });

  it('refuses a frame of another SPDY version', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(0x80020001);
    expect(() => new FrameReader().push(bad)).toThrow(/version 2/);
  });
});

describe('remotecommand pieces', () => {
  it('decodes resize messages split anywhere and ignores junk', () => {
    const d = new ResizeDecoder();
    expect(d.push('{"Width":80,"Hei')).toEqual([]);
    expect(d.push('ght":24}\n{"Width":100,"Height":30}{"Width":"x"}')).toEqual([
      { width: 80, height: 24 },
      { width: 100, height: 30 },
    ]);
  });

  it('round-trips exit codes through the v4 Status, and v1 text', () => {
    expect(parseErrorStream(JSON.stringify(exitStatus(7)), true)).toEqual({ exitCode: 7 });
    expect(parseErrorStream(JSON.stringify(exitStatus(0)), true)).toEqual({ exitCode: 0 });
    expect(parseErrorStream(errorStreamPayload({ error: 'no such container' }, true), true)).toEqual({ message: 'no such container' });
    expect(errorStreamPayload({ exitCode: 0 }, false)).toBe('');
    expect(parseErrorStream(errorStreamPayload({ exitCode: 3 }, false), false).message).toMatch(/non-zero exit code/);
  });

  it('negotiates by the client order and reads repeated headers', () => {
    expect(negotiate(headerList(['v4.channel.k8s.io, v3.channel.k8s.io']), ['v3.channel.k8s.io', 'v4.channel.k8s.io'])).toBe('v4.channel.k8s.io');
    expect(negotiate([], ['x'])).toBe('');
    expect(negotiate(['v9'], ['x'])).toBeUndefined();
  });
});

describe('streaming tokens', () => {
  it('are single-use', () => {
    const t = new TokenCache<string>(60_000);
    const token = t.insert('exec');
    expect(token).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(t.consume(token)).toBe('exec');
    expect(t.consume(token)).toBeUndefined();
  });

  it('expire after the TTL and are swept', () => {
    let now = 1000;
    const t = new TokenCache<string>(500, () => now);
    const token = t.insert('x');
    now = 1500;
    expect(t.consume(token)).toBeUndefined();
    t.insert('y');
    now = 3000;
    t.insert('z');
    expect(t.size).toBe(1);
  });

  it('are bounded', () => {
    const t = new TokenCache<number>(60_000, Date.now, 2);
    t.insert(1);
    t.insert(2);
    expect(() => t.insert(3)).toThrow(/too many streaming requests/);
  });
});
