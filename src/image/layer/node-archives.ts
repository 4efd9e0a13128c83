// The batched end-of-layer work Node cannot do itself (no mknod, no setxattr): fifos, device nodes and
// overlay whiteouts as tar archives for one `tar -x`, and names quoted for one `setfattr --restore`.
import { pack as tarPack } from 'tar-stream';

/** A fifo or device node, made at the end of the layer (by `tar -x`, which can mknod). */
export interface DeviceNode {
  type: 'fifo' | 'character-device' | 'block-device';
  devmajor: number;
  devminor: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

/** What tar-stream's packer writes in a 6-digit octal field (ids, device numbers). */
export const MAX_USTAR_NUMBER = 0o777777;

/** A node for makeNodes: its path in the layer and what it is. */
export type NodeEntry = DeviceNode & { name: string };

/** Tar archives of a thousand nodes each, read back to back by one `tar -x -i` (memory stays flat). */
export async function* nodeArchives(nodes: NodeEntry[]): AsyncGenerator<Buffer> {
  for (let i = 0; i < nodes.length; i += 1000) {
    const pack = tarPack();
    const chunks: Buffer[] = [];
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    const ended = new Promise<void>((resolve, reject) => {
      pack.once('end', resolve);
      pack.once('error', reject);
    });
    for (const n of nodes.slice(i, i + 1000)) {
      // tar-stream writes ids in 6 octal digits (to 262143) and whole seconds from 1970 to 2242: others go
      // in pax records, as GNU tar writes them
      const ms = n.mtime.getTime();
      const inUstar = n.uid <= MAX_USTAR_NUMBER && n.gid <= MAX_USTAR_NUMBER && ms >= 0 && ms <= 0o77777777777 * 1000 && ms % 1000 === 0;
      // copies: the packer fills in fields it finds falsy (mode 0 becomes 0644) on the object it is given
      pack.entry(inUstar ? { ...n } : { ...n, uid: 0, gid: 0, mtime: new Date(0), pax: { uid: String(n.uid), gid: String(n.gid), mtime: String(ms / 1000) } });
    }
    pack.finalize();
    await ended;
    yield Buffer.concat(chunks);
  }
}

/** Quotes a name for getfattr's dump format: control bytes, space, "=", backslash and non-ASCII as \ooo. */
export function dumpQuote(b: Buffer): string {
  let out = '';
  for (const c of b) out += c <= 0x20 || c === 0x3d || c === 0x5c || c >= 0x7f ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
  return out;
}
