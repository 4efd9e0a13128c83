// Small pieces shared by the streaming tests: collecting output, waiting for a condition, moving bytes
// through a port-forward session (SPDY) or a port-forward WebSocket.
import { Duplex, Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { WebSocket } from 'ws';
import type { PortForwardSession } from '../../src/stream/client.js';

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A Writable that keeps everything written to it. */
export function sink(): Writable & { text(): string; bytes(): Buffer } {
  const parts: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  }) as Writable & { text(): string; bytes(): Buffer };
  w.text = () => Buffer.concat(parts).toString();
  w.bytes = () => Buffer.concat(parts);
  return w;
}

export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sends `payload` through one forwarded connection (then half-closes) and returns what came back. */
export async function roundTrip(session: PortForwardSession, port: number, payload: Buffer): Promise<Buffer> {
  const back: Buffer[] = [];
  // Our side of the forwarded connection: the session reads `payload` from it and writes back the answer.
  const io = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      back.push(chunk);
      cb();
    },
  });
  io.push(payload);
  io.push(null);
  await session.forward(io, port);
  return Buffer.concat(back);
}

/**
 * Port-forward over WebSocket (v4.channel.k8s.io, `?ports=`): sends `payload` on the port's data channel
 * and resolves with as many bytes as came back. The first message of each channel must carry the port.
 */
export async function wsPortForwardEcho(url: string, port: number, payload: Buffer): Promise<Buffer> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}?ports=${port}`, ['v4.channel.k8s.io']);
  const got: Buffer[] = [];
  let gotBytes = 0;
  const prefixed = new Set<number>();
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('error', reject);
      ws.on('message', (raw: Buffer) => {
        const ch = raw[0];
        let data = raw.subarray(1);
        if (!prefixed.has(ch)) {
          prefixed.add(ch);
          if (data.readUInt16LE(0) !== port) reject(new Error(`channel ${ch} announced port ${data.readUInt16LE(0)}`));
          data = data.subarray(2);
        }
        if (ch === 1 && data.length > 0) reject(new Error(data.toString()));
        if (ch === 0) {
          got.push(data);
          gotBytes += data.length;
        }
        if (gotBytes >= payload.length) resolve();
      });
      ws.once('open', () => {
        for (let at = 0; at < payload.length; at += 32 * 1024) ws.send(Buffer.concat([Buffer.from([0]), payload.subarray(at, at + 32 * 1024)]));
      });
    });
  } finally {
    ws.close();
  }
  return Buffer.concat(got);
}
