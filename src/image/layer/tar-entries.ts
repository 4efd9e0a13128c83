// Tar entries as GNU tar and Go's archive/tar (under containerd) read them, from what tar-stream hands out:
// names cleaned as if rooted at "/", pax records (xattrs byte for byte, uid, gid, mtime), global pax headers
// ignored, and what cannot be applied faithfully refused.
import type { Header as Headers } from 'tar-stream';
import { invalidArgument } from '../../errors.js';

/**
 * A pax header's size and records. Real ones hold a path, a link target, times and a few xattrs.
 */
const MAX_PAX_BYTES = 256 * 1024;
const MAX_PAX_RECORDS = 512;
const XATTR_KEY = 'SCHILY.xattr.';

/** Cleans a tar path lexically as if rooted at "/": no "..", no absolute, no empty or "." parts. */
export function cleanPath(name: string): string[] {
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out;
}

/** The xattrs of each pax header object tar-stream hands out (header.pax), as raw bytes. */
const rawXattrs = new WeakMap<object, Map<string, Buffer>>();

/** An entry's xattrs, byte for byte, from its own pax header (none without one). */
export function xattrsOf(h: Headers): Map<string, Buffer> | undefined {
  const pax = (h as Headers & { pax?: object | null }).pax;
  return pax ? rawXattrs.get(pax) : undefined;
}

/** Parses pax records ("<len> key=value\n"), keeping values as bytes; refuses oversized headers. */
function paxXattrs(buf: Buffer): Map<string, Buffer> {
  if (buf.length > MAX_PAX_BYTES) throw invalidArgument(`layer has a pax header of ${buf.length} bytes (the limit is ${MAX_PAX_BYTES}): refused`);
  const out = new Map<string, Buffer>();
  let records = 0;
  for (let pos = 0; pos < buf.length; ) {
    if (++records > MAX_PAX_RECORDS) throw invalidArgument(`layer has a pax header with more than ${MAX_PAX_RECORDS} records: refused`);
    const space = buf.indexOf(0x20, pos);
    // parseInt, as tar-stream reads it ("11x" is 11): the records counted must be the ones it decodes
    const len = space < 0 ? 0 : parseInt(buf.toString('latin1', pos, space), 10);
    // malformed records: tar-stream stops at the same point, so nothing after it applies
    if (!len || len <= space - pos || pos + len > buf.length) break;
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= pos + len) break;
    const key = buf.toString('utf8', space + 1, eq);
    // a copy: a view would keep the whole decompressed chunk it sits in alive until the layer ends
    if (key.startsWith(XATTR_KEY)) out.set(key.slice(XATTR_KEY.length), Buffer.from(buf.subarray(eq + 1, pos + len - 1)));
    pos += len;
  }
  return out;
}

/** tar-stream's internals this module reaches into (tar-stream 3; see keepRawXattrs). */
interface ExtractInternals {
  _decodeLongHeader(buf: Buffer): void;
  _header: { type?: string | null } | null;
  _pax: object | null;
  _paxGlobal: object | null;
}

/**
 * tar-stream decodes pax values as UTF-8, which mangles binary xattrs: a file capability's bytes over 0x7f
 * became U+FFFD, i.e. other (wider) capabilities. This decodes each pax header's xattrs again from its raw
 * bytes, keyed by the header object tar-stream attaches to the entry.
 * A global header is checked and then dropped: containerd (Go's archive/tar) ignores them, while tar-stream
 * would merge its records (a path, a uid, xattrs) into only those entries that have a header of their own.
 */
export function keepRawXattrs(ex: object): void {
  const inner = ex as ExtractInternals;
  const decode = inner._decodeLongHeader.bind(inner);
  inner._decodeLongHeader = (buf: Buffer) => {
    const type = inner._header?.type;
    const raw = type === 'pax-header' || type === 'pax-global-header' ? paxXattrs(buf) : undefined;
    decode(buf);
    // what tar-stream decoded decides (its reading of odd lengths, "-N" included, differs from ours)
    const decoded = type === 'pax-global-header' ? inner._paxGlobal : type === 'pax-header' ? inner._pax : null;
    if (decoded && Object.keys(decoded).length > MAX_PAX_RECORDS) throw invalidArgument(`layer has a pax header with more than ${MAX_PAX_RECORDS} records: refused`);
    if (type === 'pax-global-header') inner._paxGlobal = null;
    else if (type === 'pax-header' && raw && inner._pax) rawXattrs.set(inner._pax, raw);
  };
}

/** Largest uid/gid Linux takes ((uid_t)-1 means "no change"). */
const MAX_ID = 0xfffffffe;

/**
 * The entry as GNU tar (and Go's archive/tar, which containerd uses) reads it: tar-stream applies only a pax
 * header's path, linkpath and size, and types an old-style directory ("name/" with typeflag 0) as a file.
 */
export function asGnuTarReadsIt(h: Headers): Headers {
  const name = h.name.slice(0, 200);
  const pax = (h as Headers & { pax?: Record<string, string> | null }).pax ?? {};
  // a type tar-stream does not know (GNU sparse 'S', dumpdir 'D', multi-volume 'M', vendor types): writing
  // its body as a file would put the wrong bytes where a real file belongs
  if (h.type === null) throw invalidArgument(`layer entry "${name}" has an entry type skiff does not support (GNU sparse, dumpdir, multi-volume…): refused`);
  if (Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) throw invalidArgument(`layer entry "${name}" is a sparse file (pax GNU.sparse), which skiff does not support: refused`);
  const type = (h.type === undefined || h.type === 'file') && h.name.endsWith('/') ? 'directory' : (h.type ?? 'file');
  // an empty pax value means "use the ustar field", as Go and GNU tar read it
  const id = (key: 'uid' | 'gid'): number => {
    const v = pax[key] || String(h[key] ?? 0);
    if (!/^\d{1,10}$/.test(v) || Number(v) > MAX_ID) throw invalidArgument(`layer entry "${name}" has ${key} "${v.slice(0, 40)}", not a ${key}: refused`);
    return Number(v);
  };
  let mtime = h.mtime;
  if (pax.mtime) {
    // seconds since the epoch with an optional fraction; milliseconds are what a Date keeps
    if (!/^-?\d{1,12}(\.\d{1,30})?$/.test(pax.mtime)) throw invalidArgument(`layer entry "${name}" has pax mtime "${pax.mtime.slice(0, 40)}", not a time: refused`);
    mtime = new Date(Math.round(Number(pax.mtime) * 1000));
  }
  return { ...h, type, uid: id('uid'), gid: id('gid'), mtime };
}
