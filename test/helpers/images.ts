// Builds OCI images in memory for tests, the demo and the benchmark: layers from tar entries (gzip, zstd or
// plain), a busybox image from the host's busybox-static, OCI-archive and docker-save tarballs.
import { pack as tarPack } from 'tar-stream';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';

export type Compression = 'gzip' | 'zstd' | 'none';

export interface LayerEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: Buffer | string;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
  data: Buffer;
}

export interface Layer extends Blob {
  diffId: string;
}

export interface BuiltImage {
  manifest: Blob;
  config: Blob;
  layers: Layer[];
}

export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export function blob(data: Buffer | string, mediaType: string): Blob {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return { digest: sha256(b), size: b.length, mediaType, data: b };
}

export async function tarOf(entries: LayerEntry[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((r, j) => {
    p.on('end', () => r());
    p.on('error', j);
  });
  for (const e of entries) {
    const content = e.content === undefined ? Buffer.alloc(0) : Buffer.from(e.content);
    const type = e.type ?? 'file';
    await new Promise<void>((res, rej) => {
      p.entry(
        {
          name: e.name,
          type,
          linkname: e.linkname,
          mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
          uid: e.uid ?? 0,
          gid: e.gid ?? 0,
          mtime: e.mtime ?? new Date(1_700_000_000_000),
          devmajor: e.devmajor,
          devminor: e.devminor,
          pax: e.pax,
          size: type === 'file' ? content.length : 0,
        },
        type === 'file' ? content : '',
        (err) => (err ? rej(err) : res()),
      );
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

function zstdCompress(data: Buffer): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', '-3'], { input: data, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr.toString()}`);
  return r.stdout;
}

export function layerFromTar(tar: Buffer, compression: Compression = 'gzip', docker = false): Layer {
  const data = compression === 'gzip' ? gzipSync(tar, { level: 1 }) : compression === 'zstd' ? zstdCompress(tar) : tar;
  const mediaType = docker
    ? `application/vnd.docker.image.rootfs.diff.tar${compression === 'none' ? '' : `.${compression}`}`
    : `application/vnd.oci.image.layer.v1.tar${compression === 'none' ? '' : `+${compression}`}`;
  return { ...blob(data, mediaType), diffId: sha256(tar) };
}

export async function layer(entries: LayerEntry[], compression: Compression = 'gzip'): Promise<Layer> {
  return layerFromTar(await tarOf(entries), compression);
}

export interface ImageOptions {
  config?: Record<string, unknown>;
  architecture?: string;
  os?: string;
  /** Docker media types instead of OCI ones. */
  docker?: boolean;
  /** Override diff_ids (to build broken images). */
  diffIds?: string[];
}

export function image(layers: Layer[], opts: ImageOptions = {}): BuiltImage {
  const config = blob(
    JSON.stringify({
      architecture: opts.architecture ?? 'amd64',
      os: opts.os ?? 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'], ...(opts.config ?? {}) },
      rootfs: { type: 'layers', diff_ids: opts.diffIds ?? layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'skiff test' })),
    }),
    opts.docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
  );
  const mediaType = opts.docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
    mediaType,
  );
  return { manifest, config, layers };
}

export interface IndexEntry {
  manifest: Blob;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

export function index(entries: IndexEntry[], docker = false): Blob {
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.list.v2+json' : 'application/vnd.oci.image.index.v1+json';
  return blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      manifests: entries.map((e) => ({ mediaType: e.manifest.mediaType, digest: e.manifest.digest, size: e.manifest.size, platform: e.platform, annotations: e.annotations })),
    }),
    mediaType,
  );
}

/** Applets linked to /bin/busybox in the busybox image. */
export const BUSYBOX_APPLETS = ['sh', 'ash', 'echo', 'sleep', 'cat', 'true', 'false', 'yes', 'id', 'ls', 'ps', 'env', 'pwd', 'mkdir', 'rm', 'touch', 'head', 'tail', 'wc', 'grep', 'sed', 'test', '[', 'kill', 'hostname', 'mount', 'stat', 'date', 'whoami', 'uname', 'dd', 'cp', 'mv', 'ln', 'chmod', 'printf', 'nc', 'wget', 'ip', 'ping', 'timeout', 'top', 'find', 'seq', 'awk', 'tr', 'cut', 'sort', 'tee', 'xargs', 'basename', 'dirname', 'readlink', 'nproc', 'free', 'df', 'du', 'vi', 'less', 'more', 'watch', 'nslookup', 'ifconfig'];

export function busyboxEntries(): LayerEntry[] {
  const bin = readFileSync('/bin/busybox');
  const mode = statSync('/bin/busybox').mode & 0o7777;
  const e: LayerEntry[] = [
    { name: 'bin', type: 'directory' },
    { name: 'bin/busybox', content: bin, mode: mode | 0o755 },
    ...BUSYBOX_APPLETS.map((a): LayerEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox', mode: 0o777 })),
    { name: 'etc', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { name: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
    { name: 'root', type: 'directory', mode: 0o700 },
    { name: 'tmp', type: 'directory', mode: 0o1777 },
    { name: 'proc', type: 'directory' },
    { name: 'sys', type: 'directory' },
    { name: 'dev', type: 'directory' },
    { name: 'var', type: 'directory' },
    { name: 'usr', type: 'directory' },
    { name: 'usr/bin', type: 'directory' },
  ];
  return e;
}

let busyboxCache: Promise<BuiltImage> | undefined;
/** The busybox test image (one gzip layer), built once per process. */
export function busyboxImage(): Promise<BuiltImage> {
  busyboxCache ??= (async () => image([await layer(busyboxEntries())], { config: { Cmd: ['sh'] } }))();
  return busyboxCache;
}

/** An OCI image layout as a tar (what `skopeo copy oci-archive:` and `docker save` ≥ 25 write). */
export async function ociArchive(img: BuiltImage, refName: string): Promise<Buffer> {
  const idx = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size, annotations: { 'org.opencontainers.image.ref.name': refName, 'io.containerd.image.name': refName } }],
  };
  const blobs = [img.manifest, img.config, ...img.layers];
  return tarOf([
    { name: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { name: 'index.json', content: JSON.stringify(idx) },
    { name: 'blobs', type: 'directory' },
    { name: 'blobs/sha256', type: 'directory' },
    ...blobs.map((b): LayerEntry => ({ name: `blobs/sha256/${b.digest.slice(7)}`, content: b.data })),
  ]);
}

/** A classic `docker save` tarball: manifest.json, <config>.json, <id>/layer.tar (uncompressed). */
export async function dockerArchive(img: BuiltImage, repoTag: string): Promise<Buffer> {
  const { gunzipSync } = await import('node:zlib');
  const layerTars = img.layers.map((l) => (l.mediaType.endsWith('gzip') ? gunzipSync(l.data) : l.data));
  const entries: LayerEntry[] = [{ name: `${img.config.digest.slice(7)}.json`, content: img.config.data }];
  layerTars.forEach((t, i) => {
    entries.push({ name: `${img.layers[i].diffId.slice(7)}`, type: 'directory' });
    entries.push({ name: `${img.layers[i].diffId.slice(7)}/layer.tar`, content: t });
  });
  entries.push({
    name: 'manifest.json',
    content: JSON.stringify([{ Config: `${img.config.digest.slice(7)}.json`, RepoTags: [repoTag], Layers: layerTars.map((_t, i) => `${img.layers[i].diffId.slice(7)}/layer.tar`) }]),
  });
  return tarOf(entries);
}

/** Writes the busybox image as an archive file (OCI by default) for `skiff load`. */
export async function writeBusyboxArchive(path: string, refName = 'docker.io/library/busybox:latest', format: 'oci' | 'docker' = 'oci'): Promise<void> {
  const img = await busyboxImage();
  await writeFile(path, format === 'oci' ? await ociArchive(img, refName) : await dockerArchive(img, refName));
}
