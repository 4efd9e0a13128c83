// Image archives for `skiff load`: an OCI image layout tarball (skopeo oci-archive, `docker save` ≥ 25,
// buildah) or a classic `docker save` tarball (manifest.json + layer.tar files). The archive is unpacked
// into a scratch dir (regular files only, names cleaned so nothing lands outside it) and served by
// ArchiveRegistry, a read-only registry on 127.0.0.1 that the daemon pulls from (see src/cli/commands/images.ts).
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { cleanPath } from './layer/tar-entries.js';
import { invalidArgument, errnoCode } from '../errors.js';
import { MT } from './manifest.js';
import { isDigest } from './reference.js';

export interface ArchiveImage {
  /** Names recorded in the archive (RepoTags / image.ref.name); may be empty. */
  names: string[];
  manifestDigest: string;
}

interface StoredBlob {
  path: string;
  size: number;
  mediaType?: string;
}

async function fileDigest(path: string): Promise<{ digest: string; size: number; head: Buffer }> {
  const h = createHash('sha256');
  let size = 0;
  let head = Buffer.alloc(0);
  for await (const c of createReadStream(path)) {
    const b = c as Buffer;
    if (head.length < 4) head = Buffer.concat([head, b.subarray(0, 4)]);
    h.update(b);
    size += b.length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size, head };
}

export class ImageArchive {
  readonly blobs = new Map<string, StoredBlob>();
  readonly images: ArchiveImage[] = [];
  private readonly links = new Map<string, string>();

  private constructor(readonly dir: string) {}

  /** Unpacks `file` into `dir` (an empty scratch dir) and indexes its images. */
  static async open(file: string, dir: string): Promise<ImageArchive> {
    const a = new ImageArchive(dir);
    await a.extract(file);
    try {
      await stat(join(dir, 'index.json'));
      await a.indexOci();
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      await a.indexDocker();
    }
    if (a.images.length === 0) throw invalidArgument(`${file}: no images in the archive`);
    return a;
  }

  private async extract(file: string): Promise<void> {
    const ex = tarExtract();
    const consume = (async () => {
      for await (const e of ex) {
        const parts = cleanPath(e.header.name);
        const rel = parts.join('/');
        if (parts.length && e.header.type === 'file') {
          const target = join(this.dir, rel);
          await mkdir(dirname(target), { recursive: true });
          const fh = await open(target, 'w', 0o600);
          try {
            for await (const c of e) await fh.write(c as Buffer);
          } finally {
            await fh.close();
          }
          continue;
        }
        // docker save dedups identical layers with symlinks; resolved lexically inside the archive
        if (parts.length && (e.header.type === 'symlink' || e.header.type === 'link')) {
          const base = e.header.type === 'symlink' ? [...parts.slice(0, -1), ...(e.header.linkname ?? '').split('/')].join('/') : (e.header.linkname ?? '');
          this.links.set(rel, cleanPath(base).join('/'));
        }
        e.resume();
      }
    })();
    try {
      await Promise.all([pipeline(createReadStream(file), ex), consume]);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw invalidArgument(`${file}: no such file`);
      throw invalidArgument(`${file} is not a readable tar archive: ${(err as Error).message}`);
    }
  }

  private resolve(rel: string): string {
    const clean = cleanPath(rel).join('/');
    return join(this.dir, this.links.get(clean) ?? clean);
  }

  private async indexOci(): Promise<void> {
    const idx = JSON.parse(await readFile(join(this.dir, 'index.json'), 'utf8')) as { manifests?: { digest: string; mediaType?: string; annotations?: Record<string, string> }[] };
    for (const m of idx.manifests ?? []) {
      if (!isDigest(m.digest)) throw invalidArgument(`index.json names an invalid digest ${String(m.digest).slice(0, 80)}`);
      const ann = m.annotations ?? {};
      const name = ann['io.containerd.image.name'] ?? ann['org.opencontainers.image.ref.name'];
      this.images.push({ names: name ? [name] : [], manifestDigest: m.digest });
    }
    // blobs are served by digest from blobs/sha256 (verified by the daemon while it pulls)
    this.blobDir = join(this.dir, 'blobs', 'sha256');
  }

  private blobDir?: string;

  private async indexDocker(): Promise<void> {
    let doc: { Config: string; RepoTags?: string[] | null; Layers: string[] }[];
    try {
      doc = JSON.parse(await readFile(join(this.dir, 'manifest.json'), 'utf8')) as typeof doc;
    } catch {
      throw invalidArgument('archive has neither index.json (OCI layout) nor manifest.json (docker save)');
    }
    for (const entry of doc) {
      const cfgPath = this.resolve(entry.Config);
      const cfg = await fileDigest(cfgPath);
      this.blobs.set(cfg.digest, { path: cfgPath, size: cfg.size });
      const layers = [];
      for (const l of entry.Layers) {
        const p = this.resolve(l);
        const d = await fileDigest(p);
        this.blobs.set(d.digest, { path: p, size: d.size });
        const gz = d.head[0] === 0x1f && d.head[1] === 0x8b;
        const zst = d.head.length >= 4 && d.head.readUInt32LE(0) === 0xfd2fb528;
        layers.push({ mediaType: `application/vnd.docker.image.rootfs.diff.tar${gz ? '.gzip' : zst ? '.zstd' : ''}`, digest: d.digest, size: d.size });
      }
      const manifest = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: MT.dockerManifest, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: cfg.digest, size: cfg.size }, layers }),
      );
      const md = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
      const mpath = join(this.dir, `.manifest-${md.slice(7)}`);
      const fh = await open(mpath, 'w');
      await fh.writeFile(manifest);
      await fh.close();
      this.blobs.set(md, { path: mpath, size: manifest.length, mediaType: MT.dockerManifest });
      this.images.push({ names: entry.RepoTags ?? [], manifestDigest: md });
    }
  }

  async blob(digest: string): Promise<StoredBlob | undefined> {
    if (!isDigest(digest)) return undefined;
    const known = this.blobs.get(digest);
    if (known) return known;
    if (!this.blobDir) return undefined;
    const path = join(this.blobDir, digest.slice(7));
    try {
      const st = await stat(path);
      if (!st.isFile()) return undefined;
      let mediaType: string | undefined;
      if (st.size < 8 * 1024 * 1024) {
        try {
          const doc = JSON.parse(await readFile(path, 'utf8')) as { mediaType?: string; manifests?: unknown; layers?: unknown };
          mediaType = doc.mediaType ?? (doc.manifests ? MT.ociIndex : doc.layers ? MT.ociManifest : undefined);
        } catch {
          mediaType = undefined;
        }
      }
      return { path, size: st.size, mediaType };
    } catch {
      return undefined;
    }
  }
}

/** Serves an archive as a read-only registry on 127.0.0.1 (any repository name; by digest only). */
export class ArchiveRegistry {
  private server?: Server;
  host = '';

  constructor(private readonly archive: ImageArchive) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const m = /^\/v2\/(?:.+\/)?(manifests|blobs)\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '');
      if (req.url === '/v2/' || req.url === '/v2') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404).end();
        return;
      }
      void this.archive.blob(m[2]).then((b) => {
        if (!b) {
          res.writeHead(404).end();
          return;
        }
        const headers: Record<string, string | number> = { 'content-length': b.size, 'docker-content-digest': m[2] };
        if (m[1] === 'manifests' && b.mediaType) headers['content-type'] = b.mediaType;
        res.writeHead(200, headers);
        if (req.method === 'HEAD') res.end();
        else createReadStream(b.path).on('error', () => res.destroy()).pipe(res);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    this.host = `127.0.0.1:${(this.server.address() as { port: number }).port}`;
    return this.host;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server!.close(() => r()));
  }
}
