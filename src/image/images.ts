// The image subsystem (`ctx.images`): pulls, lists, resolves and removes images, one store per runtime
// handler (KEP-4216), and builds container root filesystems from them.
//
// API for other subsystems (containers):
//   resolve(name, handler?)                  -> ImageRecord | undefined   (ID, ID prefix, tag, digest, short name)
//   require(name, handler?)                  -> ImageRecord, NOT_FOUND when unknown
//   prepareRootfs(image, containerId)        -> absolute path of the mounted overlay rootfs (idempotent)
//   removeRootfs(containerId)                -> unmounts, deletes the upper dir, GCs what the image removal left
//   rootfsPath(containerId)                  -> where prepareRootfs mounts it
//   containerFilesystemUsage()               -> bytes/inodes used by containers' writable layers
// An ImageRecord carries `id`, `repoTags`, `repoDigests`, `runtimeHandler` and `config.config` with the OCI
// image config (User, Env, Entrypoint, Cmd, WorkingDir, StopSignal, Labels, ExposedPorts, Volumes).
// Removing an image a container uses is allowed (kubelet does it); its snapshots stay until the last
// container using them is removed.
//
// On-disk layout under <root>/images/<handler>/: blobs/sha256/…, ingest/, snapshots/<n>/{fs,meta.json},
// records/<id>.json; container rootfs under <root>/rootfs/<container>/{upper,work,merged,rootfs.json}.
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { writeFileAtomic } from '../store/atomic.js';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import { ContentStore } from './content-store.js';
import { SnapshotStore } from './snapshots.js';
import { ImageStore, type ImageRecord } from './image-store.js';
import { RootfsStore } from './rootfs.js';
import { RegistrySession } from './registry-client.js';
import { resolveEndpoints } from './hosts.js';
import { credentialsFromDockerConfig, requestCredentialsFor, type Credentials } from './auth.js';
import { parseReference, formatReference, taggedName, repoName, isLoopbackHost, type ImageReference } from './reference.js';
import { pullImage, type PullProgress, type PulledImage } from './pull.js';
import { notFound, invalidArgument, unavailable } from '../errors.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { run } from '../util/exec.js';

/**
 * ImageSpec annotation naming where to fetch an image from while recording it under ImageSpec.image (`skiff
 * load`). kubelet copies every pod annotation into ImageSpec.annotations, so a pod author can set it too: it
 * is honoured only with the daemon's load key beside it (PULL_SOURCE_KEY_ANNOTATION, read by root from
 * loadKeyPath), for a loopback source pinned by digest, and no credentials are ever sent to that source.
 */
export const PULL_SOURCE_ANNOTATION = 'skiff.io/pull-source';
export const PULL_SOURCE_KEY_ANNOTATION = 'skiff.io/pull-source-key';

/** The root-only file holding the daemon's load key: beside its socket, which is all `skiff load` knows. */
export function loadKeyPath(socket: string): string {
  return `${socket}.load-key`;
}

export interface PullRequest {
  image: string;
  handler?: string;
  credentials?: Credentials;
  /** AuthConfig.server_address: the registry `credentials` are for (empty: the image's own registry). */
  serverAddress?: string;
  annotations?: Record<string, string>;
  /** Fires when the caller gives up: downloads and unpacks stop, and the pull fails with CANCELLED. */
  signal?: AbortSignal;
}

export interface FsUsage {
  mountpoint: string;
  usedBytes: number;
  inodesUsed: number;
}

class HandlerImages {
  readonly content: ContentStore;
  readonly snapshots: SnapshotStore;
  readonly images: ImageStore;
  /** Digests and chain IDs pulls in flight fetched or reuse, counted per pull: GC keeps them. */
  readonly held = new Map<string, number>();
  constructor(readonly handler: string, readonly dir: string) {
    this.content = new ContentStore(dir);
    this.snapshots = new SnapshotStore(join(dir, 'snapshots'));
    this.images = new ImageStore(dir);
  }
}

async function measure(path: string): Promise<{ bytes: number; inodes: number }> {
  const [b, i] = await Promise.all([
    run('du', ['-s', '-x', '-B1', path], { timeoutMs: 60_000 }),
    run('du', ['-s', '-x', '--inodes', path], { timeoutMs: 60_000 }),
  ]);
  return { bytes: Number(b.stdout.split(/\s/)[0]) || 0, inodes: Number(i.stdout.split(/\s/)[0]) || 0 };
}

export class ImageService {
  private readonly stores = new Map<string, HandlerImages>();
  private readonly session = new RegistrySession();
  readonly rootfs: RootfsStore;
  /** Serialises record changes and GC per handler; pulls of different images still download in parallel. */
  private readonly lock = new KeyedMutex();
  /** Pulls in flight, by normalised reference: what `skiff pull` shows as progress. */
  readonly inflight = new Map<string, PullProgress>();
  readonly imagesDir: string;
  private loadKey = '';

  constructor(
    private readonly config: SkiffConfig,
    private readonly handlers: RuntimeHandlers,
    private readonly log: Logger,
  ) {
    this.imagesDir = join(config.root, 'images');
    this.rootfs = new RootfsStore(join(config.root, 'rootfs'));
  }

  async init(): Promise<void> {
    await mkdir(this.imagesDir, { recursive: true, mode: 0o700 });
    // a fresh key every start: one leaked with an old file is worth nothing; rename replaces any symlink
    this.loadKey = randomBytes(32).toString('hex');
    await writeFileAtomic(loadKeyPath(this.config.socket), this.loadKey, 0o600);
    for (const h of this.handlers.names()) await this.store(h);
  }

  async close(): Promise<void> {
    await this.session.close();
  }

  handlerName(handler: string | undefined): string {
    return this.handlers.config_(handler ?? '').name;
  }

  private async store(handler: string | undefined): Promise<HandlerImages> {
    const name = this.handlerName(handler);
    let s = this.stores.get(name);
    if (!s) {
      s = new HandlerImages(name, join(this.imagesDir, name));
      const warn = (msg: string) => this.log.warn({ handler: name }, msg);
      await s.content.init();
      await s.snapshots.init(warn);
      await s.images.init(warn);
      this.stores.set(name, s);
    }
    return s;
  }

  async pull(req: PullRequest): Promise<ImageRecord> {
    const named = parseReference(req.image);
    const loadSource = this.trustedPullSource(req);
    const source: ImageReference = loadSource ?? named;
    const s = await this.store(req.handler);
    const key = formatReference(named);
    const progress: PullProgress = { reference: key, startedAt: Date.now(), layers: [] };
    this.inflight.set(key, progress);
    const held = new Set<string>();
    const hold = (ids: string[]) => {
      for (const id of ids) {
        if (held.has(id)) continue;
        held.add(id);
        s.held.set(id, (s.held.get(id) ?? 0) + 1);
      }
    };
    try {
      // an archive served on loopback: no mirrors, no hosts.toml, and never any credentials
      const endpoints = await resolveEndpoints(source.registry, loadSource ? { configPath: '', mirrors: {}, insecure: [] } : this.config.registry);
      const credentials = loadSource
        ? async () => undefined
        : async (host: string) =>
            (req.credentials && requestCredentialsFor(host, req.serverAddress, named.registry) ? req.credentials : undefined) ??
            (await credentialsFromDockerConfig(this.config.registry.authFile, host));
      const job = { source, endpoints, credentials, session: this.session, content: s.content, snapshots: s.snapshots, log: this.log, progress, hold, signal: req.signal };
      let pulled = await pullImage(job);
      // Held items cannot go, but one may have gone before the pull announced it: pull once more (it fetches
      // only what is missing) and give up cleanly if it still is not all there.
      for (let attempt = 0; (await this.missing(s, pulled)).length; attempt++) {
        if (attempt > 0) throw unavailable(`image ${key}: layers were removed while it was pulled (${(await this.missing(s, pulled)).join(', ')}); pull it again`, { image: key });
        this.log.warn({ image: key }, 'image GC removed part of an image while it was pulled; pulling the missing parts again');
        pulled = await pullImage(job);
      }
      return await this.lock.run(s.handler, async () => {
        req.signal?.throwIfAborted();
        const missing = await this.missing(s, pulled);
        if (missing.length) throw unavailable(`image ${key}: ${missing.join(', ')} went missing while it was pulled; pull it again`, { image: key });
        const existing = s.images.get(pulled.id);
        const tag = taggedName(named);
        const repoDigest = `${repoName(named)}@${named.digest ?? pulled.topDigest}`;
        const rec: ImageRecord = {
          ...pulled,
          repoTags: [...new Set([...(existing?.repoTags ?? []), ...(tag && !named.digest ? [tag] : [])])],
          repoDigests: [...new Set([...(existing?.repoDigests ?? []), repoDigest])],
          manifestDigests: [...new Set([...(existing?.manifestDigests ?? []), ...pulled.manifestDigests, pulled.topDigest])],
          runtimeHandler: s.handler,
          userSpecifiedImage: req.image,
          pinned: existing?.pinned ?? false,
          pulledAt: Date.now(),
        };
        delete (rec as Partial<typeof pulled>).topDigest;
        await s.images.save(rec);
        this.log.info({ image: key, id: rec.id, handler: s.handler }, 'image pulled');
        return rec;
      });
    } finally {
      this.inflight.delete(key);
      for (const id of held) {
        const n = (s.held.get(id) ?? 1) - 1;
        if (n > 0) s.held.set(id, n);
        else s.held.delete(id);
      }
    }
  }

  /** What a pulled image needs that is not in the store: snapshots of its chain IDs, its manifests and config. */
  private async missing(s: HandlerImages, pulled: PulledImage): Promise<string[]> {
    const out = pulled.chainIds.filter((c) => !s.snapshots.get(c));
    for (const d of [...pulled.manifestDigests, pulled.id]) if (!(await s.content.has(d))) out.push(d);
    return out;
  }

  /** The pull-source of a `skiff load` pull, or undefined (then the image comes from its own name's registry). */
  private trustedPullSource(req: PullRequest): ImageReference | undefined {
    const text = req.annotations?.[PULL_SOURCE_ANNOTATION];
    if (!text) return undefined;
    const key = Buffer.from(req.annotations?.[PULL_SOURCE_KEY_ANNOTATION] ?? '');
    const want = Buffer.from(this.loadKey);
    let source: ImageReference | undefined;
    try {
      source = parseReference(text);
    } catch {
      source = undefined;
    }
    const ok = want.length > 0 && key.length === want.length && timingSafeEqual(key, want) && source && isLoopbackHost(source.registry) && source.digest;
    if (!ok) {
      this.log.warn({ image: req.image, source: text.slice(0, 200) }, `ignoring ${PULL_SOURCE_ANNOTATION}: not from skiff load on this node; pulling the image by its own name`);
      return undefined;
    }
    return source;
  }

  async list(handler?: string): Promise<ImageRecord[]> {
    if (handler !== undefined && handler !== '') return (await this.store(handler)).images.all();
    const out: ImageRecord[] = [];
    for (const h of this.handlers.names()) out.push(...(await this.store(h)).images.all());
    return out;
  }

  async resolve(name: string, handler?: string): Promise<ImageRecord | undefined> {
    if (name.trim() === '') throw invalidArgument('image name is empty');
    return (await this.store(handler)).images.resolve(name);
  }

  async require(name: string, handler?: string): Promise<ImageRecord> {
    const r = await this.resolve(name, handler);
    if (!r) throw notFound(`image "${name}" not found for runtime handler "${this.handlerName(handler)}"`, { image: name });
    return r;
  }

  /** Removes an image; its blobs and snapshots are garbage-collected unless another image or a container uses them. */
  async remove(name: string, handler?: string): Promise<boolean> {
    const s = await this.store(handler);
    return this.lock.run(s.handler, async () => {
      const rec = s.images.resolve(name);
      if (!rec) return false;
      // Removing by a tag that other names also point at only drops that tag, as docker rmi does.
      const ref = (() => {
        try {
          return parseReference(name);
        } catch {
          return undefined;
        }
      })();
      const asTag = ref && !ref.digest ? formatReference(ref) : undefined;
      if (asTag && rec.repoTags.includes(asTag) && rec.repoTags.length > 1) {
        rec.repoTags = rec.repoTags.filter((t) => t !== asTag);
        await s.images.save(rec);
        return true;
      }
      await s.images.remove(rec.id);
      await this.gc(s);
      return true;
    });
  }

  /** Deletes blobs and snapshots no image record, no container rootfs and no pull in flight refers to. Call under the lock. */
  private async gc(s: HandlerImages): Promise<void> {
    const blobs = new Set<string>();
    const chains = new Set<string>();
    for (const r of s.images.all()) {
      blobs.add(r.id);
      for (const d of r.manifestDigests) blobs.add(d);
      for (const l of r.layers) blobs.add(l.digest);
      for (const c of r.chainIds) chains.add(c);
    }
    for (const rf of await this.rootfs.all()) if (rf.handler === s.handler) for (const c of rf.chainIds) chains.add(c);
    let removed = 0;
    for (const d of await s.content.list()) {
      // held: a pull in flight fetched or reuses it and has not saved its record yet
      if (!blobs.has(d) && !s.held.has(d)) {
        await s.content.remove(d);
        removed++;
      }
    }
    for (const snap of s.snapshots.all()) {
      if (!chains.has(snap.chainId) && !s.held.has(snap.chainId)) {
        await s.snapshots.remove(snap.chainId);
        removed++;
      }
    }
    if (removed) this.log.info({ handler: s.handler, removed }, 'image GC');
  }

  rootfsPath(containerId: string): string {
    return join(this.rootfs.containerDir(containerId), 'merged');
  }

  /** A container's own writes (its overlay upper dir) and the filesystem all of them live on (ImageFsInfo's mountpoint). */
  writableLayer(containerId: string): { dir: string; mountpoint: string } {
    return { dir: join(this.rootfs.containerDir(containerId), 'upper'), mountpoint: this.rootfs.dir };
  }

  /** Mounts the container's overlay rootfs (idempotent) and returns its path. */
  async prepareRootfs(image: ImageRecord, containerId: string): Promise<string> {
    const s = await this.store(image.runtimeHandler);
    return this.lock.run(s.handler, async () => {
      const lowers: string[] = [];
      for (const c of image.chainIds) {
        const snap = s.snapshots.get(c);
        if (!snap) throw notFound(`image ${image.id} is missing its layer snapshot ${c}; pull it again`, { image: image.id });
        lowers.push(s.snapshots.relFs(snap));
      }
      // overlay's first lowerdir is the top layer
      lowers.reverse();
      return this.rootfs.mount({ containerId, handler: s.handler, imageId: image.id, chainIds: image.chainIds }, s.snapshots.dir, lowers);
    });
  }

  async removeRootfs(containerId: string): Promise<void> {
    const rec = await this.rootfs.remove(containerId);
    if (rec && this.stores.has(rec.handler)) {
      const s = this.stores.get(rec.handler)!;
      // snapshots kept only for this container (its image was removed meanwhile) go now
      await this.lock.run(s.handler, () => this.gc(s));
    }
  }

  async imageFilesystemUsage(): Promise<FsUsage> {
    const m = await measure(this.imagesDir);
    return { mountpoint: this.imagesDir, usedBytes: m.bytes, inodesUsed: m.inodes };
  }

  async containerFilesystemUsage(): Promise<FsUsage> {
    await mkdir(this.rootfs.dir, { recursive: true });
    // the writable layers only: merged dirs are mounts (du -x skips them), lower layers count as images
    const m = await measure(this.rootfs.dir);
    return { mountpoint: this.rootfs.dir, usedBytes: m.bytes, inodesUsed: m.inodes };
  }
}
