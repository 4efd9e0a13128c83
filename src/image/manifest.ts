// Image manifests and indexes, OCI and Docker media types: parsing, validation and picking the entry for
// this node's platform. Docker schema 1 manifests are refused with a clear message: they were deprecated
// in 2015, registries stopped serving them, and converting them means trusting unsigned v1 history.
import { arch as nodeArch } from 'node:os';
import { invalidArgument, notFound, failedPrecondition } from '../errors.js';
import { isDigest } from './reference.js';
import { isObject } from '../util/json.js';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export const MANIFEST_ACCEPT = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest];

export const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageManifest {
  kind: 'manifest';
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: 'index';
  manifests: Descriptor[];
}

/** The parts of an OCI image config skiff uses (everything else is kept as raw JSON). */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    StopSignal?: string;
    Labels?: Record<string, string> | null;
    ExposedPorts?: Record<string, unknown> | null;
    Volumes?: Record<string, unknown> | null;
  };
  rootfs?: { type: string; diff_ids: string[] };
}

function descriptor(v: unknown, where: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  if (!d || typeof d !== 'object') throw invalidArgument(`${where}: descriptor is not an object`);
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) throw invalidArgument(`${where}: descriptor digest "${String(d.digest).slice(0, 80)}" is not a sha256 digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw invalidArgument(`${where}: descriptor ${d.digest} has an invalid size`);
  return { ...d, mediaType: typeof d.mediaType === 'string' ? d.mediaType : '' } as Descriptor;
}

/**
 * Layers an image may have. Overlayfs stacks up to 500, but a container's mount options (its lowerdirs as
 * "<snapshot id>/fs", upper and work dir) must fit one page: 256 layers fit with snapshot ids of 6 digits and
 * a root path of a few hundred bytes. Docker's builder stops at 128.
 */
export const MAX_LAYERS = 256;
/** JSON nesting a registry document may have: real ones nest a handful of levels. */
const MAX_JSON_DEPTH = 64;

/**
 * Parses a registry document (manifest, index, config) as a JSON object. Nesting is bounded first, by a scan
 * of the text: thousands of levels parse fine but overflow the stack when the record holding them is written.
 */
function parseDocument(data: Buffer, what: string): Record<string, unknown> {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < data.length; i++) {
    const c = data[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next byte is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_JSON_DEPTH) throw invalidArgument(`${what} nests JSON deeper than ${MAX_JSON_DEPTH} levels`);
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(data.toString('utf8'));
  } catch {
    throw invalidArgument(`${what} is not valid JSON`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalidArgument(`${what} is not a JSON object`);
  return doc as Record<string, unknown>;
}

/** Parses a manifest or index; `contentType` is the registry's Content-Type header (may be absent). */
export function parseManifest(data: Buffer, contentType: string | undefined): ImageManifest | ImageIndex {
  const doc = parseDocument(data, 'manifest');
  const mediaType = (typeof doc.mediaType === 'string' ? doc.mediaType : undefined) ?? contentType?.split(';')[0]?.trim();
  if (doc.schemaVersion === 1 || mediaType === MT.dockerSchema1 || mediaType === MT.dockerSchema1Signed) {
    throw failedPrecondition('Docker schema 1 manifests are not supported (deprecated since 2015); re-push the image with a current docker, buildah or skopeo');
  }
  if (Array.isArray(doc.manifests)) {
    return { kind: 'index', manifests: doc.manifests.map((m, i) => descriptor(m, `index entry ${i}`)) };
  }
  if (doc.config !== undefined && Array.isArray(doc.layers)) {
    if (doc.layers.length > MAX_LAYERS) throw invalidArgument(`image has ${doc.layers.length} layers; overlayfs stacks at most ${MAX_LAYERS}`);
    const layers = doc.layers.map((l, i) => descriptor(l, `layer ${i}`));
    for (const l of layers) {
      if (l.mediaType && !LAYER_TYPES.has(l.mediaType)) throw invalidArgument(`layer ${l.digest} has unsupported media type ${l.mediaType}`);
    }
    const config = descriptor(doc.config, 'config');
    // the image's size is their sum: it must stay a number that can be counted exactly
    if (!Number.isSafeInteger(layers.reduce((sum, l) => sum + l.size, config.size))) throw invalidArgument('manifest sizes add up to more than 2^53 bytes');
    return { kind: 'manifest', config, layers };
  }
  throw invalidArgument(`unrecognised manifest (media type ${mediaType ?? 'none'})`);
}

/** This node's platform in OCI terms. */
export function hostPlatform(): Platform {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const architecture = map[nodeArch()] ?? nodeArch();
  return { os: 'linux', architecture, variant: architecture === 'arm64' ? 'v8' : undefined };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * The best index entry for `want`: same os+arch, preferring an exact variant; attestation entries
 * (unknown/unknown, or vnd.docker.reference.type annotations) are never chosen. Nested indexes are allowed.
 * NOT_FOUND names the platform when nothing matches.
 */
export function choosePlatform(index: ImageIndex, want: Platform = hostPlatform()): Descriptor {
  const candidates = index.manifests.filter((m) => {
    if (m.annotations?.['vnd.docker.reference.type']) return false;
    const p = m.platform;
    if (!p) return m.mediaType === MT.ociIndex || m.mediaType === MT.dockerList;
    if (p.os === 'unknown' || p.architecture === 'unknown') return false;
    return p.os === want.os && p.architecture === want.architecture;
  });
  const exact = candidates.find((m) => (m.platform?.variant ?? '') === (want.variant ?? '') || (want.variant === 'v8' && !m.platform?.variant));
  const pick = exact ?? candidates.find((m) => m.platform) ?? candidates[0];
  if (!pick) {
    const offered = index.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform!));
    throw notFound(`no image for platform ${formatPlatform(want)} in the index (it offers: ${offered.join(', ') || 'nothing'})`, { platform: formatPlatform(want) });
  }
  return pick;
}

const isString = (v: unknown): v is string => typeof v === 'string';
/** A string as Go's encoding/json decodes one (containerd and CRI-O read configs so): null is "". */
const asGoString = (v: unknown): string | undefined => (v === null ? '' : isString(v) ? v : undefined);

/** A list of strings, its nulls made "" (Go's reading); undefined when it is something else. */
function goStrings(v: unknown): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out = v.map(asGoString);
  return out.every(isString) ? out : undefined;
}

/**
 * What each field of the config's `config` section may hold, read as Go's typed decoding in containerd and
 * CRI-O reads it: null is the field's zero value, and a value of another type is refused.
 */
const CONFIG_FIELDS: Record<string, { read: (v: unknown) => unknown; is: string }> = {
  User: { read: asGoString, is: 'a string' },
  WorkingDir: { read: asGoString, is: 'a string' },
  StopSignal: { read: asGoString, is: 'a string' },
  Env: { read: (v) => (v === null ? null : goStrings(v)), is: 'a list of strings' },
  Entrypoint: { read: (v) => (v === null ? null : goStrings(v)), is: 'a list of strings' },
  Cmd: { read: (v) => (v === null ? null : goStrings(v)), is: 'a list of strings' },
  Labels: {
    read: (v) => {
      if (v === null) return null;
      if (!isObject(v)) return undefined;
      const out = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asGoString(x)]));
      return Object.values(out).every(isString) ? out : undefined;
    },
    is: 'an object of strings',
  },
  ExposedPorts: { read: (v) => (v === null || isObject(v) ? v : undefined), is: 'an object' },
  Volumes: { read: (v) => (v === null || isObject(v) ? v : undefined), is: 'an object' },
};

/**
 * Go's encoding/json matches a field's name exactly or, failing that, case-insensitively: an image whose
 * config says "user" runs as that user under containerd. The canonical names are filled in the same way.
 */
function canonicalKeys(obj: Record<string, unknown>, names: readonly string[]): void {
  for (const name of names) {
    if (name in obj) continue;
    const other = Object.keys(obj).find((k) => k.toLowerCase() === name.toLowerCase());
    if (other !== undefined) obj[name] = obj[other];
  }
}

export function parseConfig(data: Buffer): ImageConfig {
  const doc = parseDocument(data, 'image config');
  canonicalKeys(doc, ['architecture', 'os', 'config', 'rootfs']);
  if (isObject(doc.rootfs)) canonicalKeys(doc.rootfs, ['type', 'diff_ids']);
  for (const key of ['architecture', 'os'] as const) {
    if (doc[key] !== undefined && doc[key] !== null && !isString(doc[key])) throw invalidArgument(`image config field ${key} is not a string`);
  }
  if (doc.config !== undefined && doc.config !== null) {
    if (!isObject(doc.config)) throw invalidArgument('image config field config is not an object');
    canonicalKeys(doc.config, Object.keys(CONFIG_FIELDS));
    for (const [key, rule] of Object.entries(CONFIG_FIELDS)) {
      if (doc.config[key] === undefined) continue;
      const v = rule.read(doc.config[key]);
      if (v === undefined) throw invalidArgument(`image config field config.${key} is not ${rule.is}`);
      doc.config[key] = v;
    }
  }
  const c = doc as ImageConfig;
  if (!c.rootfs || !Array.isArray(c.rootfs.diff_ids) || c.rootfs.diff_ids.some((d) => typeof d !== 'string' || !isDigest(d))) {
    throw invalidArgument('image config has no valid rootfs.diff_ids');
  }
  return c;
}
