// One pull: resolve the reference to a manifest for this platform, fetch config and layers into the content
// store (in parallel, verified), unpack each layer once into its chain-ID snapshot, and return the record.
// Nothing is recorded here: the caller saves the record, under its lock, once every step succeeded. Until
// then no record refers to what this pull fetched or reuses, so every digest and chain ID is announced to
// `job.hold` before it is fetched or looked at: image GC (src/image/images.ts) keeps what a pull holds.
// Verified blobs stay for the next attempt if the pull fails, until a GC finds them unreferenced.
import { createHash } from 'node:crypto';
import type { ContentStore } from './content-store.js';
import type { SnapshotStore } from './snapshots.js';
import { chainIds as computeChainIds } from './snapshots.js';
import { RegistryClient, RangeNotSatisfiableError, UnexpectedStatusError, MAX_MANIFEST_BYTES, type RegistrySession } from './registry-client.js';
import { DigestMismatchError, type Ingest } from './content-store.js';
import { mkdir } from 'node:fs/promises';
import { removeTree } from '../util/fs.js';
import { parseManifest, choosePlatform, parseConfig, MANIFEST_ACCEPT, hostPlatform, type ImageManifest, type Platform, type Descriptor } from './manifest.js';
import { invalidArgument, unavailable, SkiffError, errorMessage } from '../errors.js';
import type { ImageReference } from './reference.js';
import type { RegistryEndpoint } from './hosts.js';
import type { Credentials } from './auth.js';
import { unpackLayerFile, unpackGrowingFile, type LiveUnpack, type UnpackResult } from './unpack.js';
import type { ImageRecord } from './image-store.js';
import type { Logger } from '../log.js';

const PARALLEL_LAYERS = 4;
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const MAX_INDEX_DEPTH = 4;

export interface LayerProgress {
  digest: string;
  size: number;
  downloaded: number;
  state: 'waiting' | 'downloading' | 'unpacking' | 'done' | 'exists';
}

export interface PullProgress {
  reference: string;
  startedAt: number;
  layers: LayerProgress[];
}

export interface PullJob {
  /** Where bytes come from (may differ from the recorded name, see `skiff load`). */
  source: ImageReference;
  endpoints: RegistryEndpoint[];
  credentials: (host: string) => Promise<Credentials | undefined>;
  session: RegistrySession;
  content: ContentStore;
  snapshots: SnapshotStore;
  log: Logger;
  progress?: PullProgress;
  platform?: Platform;
  /** Keeps blobs and snapshots (digests, chain IDs) from image GC until the caller has saved the record. */
  hold?: (ids: string[]) => void;
  /** The caller gave up: stop downloading and unpacking (CANCELLED). */
  signal?: AbortSignal;
}

export type PulledImage = Omit<ImageRecord, 'repoTags' | 'repoDigests' | 'runtimeHandler' | 'userSpecifiedImage' | 'pinned' | 'pulledAt'> & {
  /** Digest the reference resolved to (an index's, for multi-platform images). */
  topDigest: string;
};

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function fetchManifestBytes(client: RegistryClient, ref: string): Promise<{ data: Buffer; contentType?: string; digest: string }> {
  const res = await client.fetchWhole('manifests', ref, { accept: MANIFEST_ACCEPT }, MAX_MANIFEST_BYTES, 'manifest');
  const data = res.data;
  const digest = sha256(data);
  if (ref.startsWith('sha256:') && digest !== ref) {
    // the registry's fault, not the caller's: the reference was well formed
    throw unavailable(`registry returned a manifest with digest ${digest} for ${ref}`, { digest: ref });
  }
  const ct = res.headers['content-type'];
  return { data, contentType: Array.isArray(ct) ? ct[0] : ct, digest };
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length && failed === undefined) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (err) {
        failed ??= err;
      }
    }
  });
  await Promise.all(workers);
  if (failed !== undefined) throw failed instanceof Error ? failed : new Error(errorMessage(failed));
}

/** Where a response body starts in the blob: `asked` for a matching 206, 0 for a 200 (the whole blob). */
export function bodyStart(status: number, contentRange: string | undefined, asked: number): number | undefined {
  if (status !== 206) return 0;
  const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(contentRange?.trim() ?? '');
  return m && Number(m[1]) === asked ? asked : undefined;
}

/**
 * Downloads a blob into the content store. A failed body (short, reset, wrong digest) is retried on the same
 * endpoint, then the next one (mirrors before the upstream); nothing unverified is ever committed. A body cut
 * short is resumed with a Range request: only a 206 whose Content-Range starts at the byte asked for
 * continues it, a 200 restarts the blob from its first byte, anything else is discarded and retried.
 */
async function fetchBlob(job: PullJob, client: RegistryClient, digest: string, size: number, onBytes?: (n: number) => void, onIngest?: (ing: Ingest) => void): Promise<void> {
  await job.content.ensure(
    digest,
    size,
    async (ing) => {
      let lastErr: unknown;
      for (const ep of client.endpointsFor('blobs')) {
        for (let attempt = 0; attempt < 3; attempt++) {
          job.signal?.throwIfAborted();
          try {
            const asked = ing.offset > 0 && !ing.complete() ? ing.offset : 0;
            const res = await client.fetchFrom(ep, client.url(ep, 'blobs', digest), { rangeFrom: asked });
            const cr = res.headers['content-range'];
            const start = bodyStart(res.status, Array.isArray(cr) ? cr[0] : cr, asked);
            if (start === undefined) {
              res.body.destroy();
              await ing.reset();
              throw new DigestMismatchError(`blob ${digest}: ${new URL(res.url).host} answered a resume with Content-Range "${String(cr)}"`);
            }
            await ing.append(res.body, start);
            await ing.verify();
            return;
          } catch (err) {
            // a body cut by the caller's cancel is not a registry fault to retry
            job.signal?.throwIfAborted();
            lastErr = err;
            if (err instanceof RangeNotSatisfiableError) {
              await ing.reset();
              continue;
            }
            // a registry that does not have the blob, or refuses us, will not change its mind on a retry
            if ((err instanceof SkiffError && err.kind !== 'unavailable') || err instanceof UnexpectedStatusError) break;
          }
        }
      }
      if (lastErr instanceof SkiffError) throw lastErr;
      throw unavailable(`downloading blob ${digest} failed: ${errorMessage(lastErr)}`, { digest }, lastErr);
    },
    onBytes,
    onIngest,
    job.signal,
  );
}

async function emptyDir(dir: string): Promise<void> {
  await removeTree(dir);
  await mkdir(dir, { mode: 0o755 });
}

/**
 * Fills a layer's snapshot directory: downloads the blob, unpacking it while it downloads when this pull
 * does the download, or from the complete blob otherwise (another pull downloaded it, or the download
 * restarted). The caller's cancel stops both.
 */
async function unpackLayerInto(job: PullJob, client: RegistryClient, layer: Descriptor, diffId: string, fsDir: string, p?: LayerProgress): Promise<UnpackResult> {
  // another pull may have held this layer's lock until its caller gave up
  job.signal?.throwIfAborted();
  if (p) p.state = 'downloading';
  let live: LiveUnpack | undefined;
  const stopLive = () => live?.abort();
  job.signal?.addEventListener('abort', stopLive);
  try {
    try {
      await fetchBlob(job, client, layer.digest, layer.size, p ? (n) => (p.downloaded += n) : undefined, (ing) => {
        const l = unpackGrowingFile(ing.tmp, job.content.path(layer.digest), layer.size, fsDir, diffId, layer.mediaType);
        ing.watcher = { written: (n) => l.available(n), restarted: () => l.abort() };
        live = l;
      });
    } catch (err) {
      live?.abort();
      // the live unpack writes into fsDir, which goes when this throws: let it stop first
      await live?.result.catch(() => undefined);
      throw err;
    }
    if (p) p.state = 'unpacking';
    const following = live;
    let res = following
      ? await following.result.catch((err: unknown) => {
          // it read exactly the bytes that verified unless a restart aborted it: a bad layer stays bad
          if (err instanceof SkiffError && err.kind === 'invalid_argument' && !following.aborted) throw err;
          job.signal?.throwIfAborted();
          job.log.info({ layer: layer.digest, err: errorMessage(err) }, 'unpacking while downloading did not complete; unpacking the downloaded blob');
          return undefined;
        })
      : undefined;
    if (!res) {
      // no live unpack (another pull downloaded it), or it was stopped by a restarted download or failed
      // for another reason than the layer's content: unpack the verified blob from scratch
      if (live) await emptyDir(fsDir);
      res = await unpackLayerFile(job.content.path(layer.digest), fsDir, diffId, layer.mediaType, job.signal);
    }
    if (res.skippedDevices.length) job.log.warn({ layer: layer.digest, devices: res.skippedDevices.slice(0, 20) }, 'device nodes could not be created; skipped');
    return res;
  } finally {
    job.signal?.removeEventListener('abort', stopLive);
  }
}

export async function pullImage(job: PullJob): Promise<PulledImage> {
  const client = new RegistryClient(job.session, job.source.registry, job.source.repository, job.endpoints, job.credentials, job.signal);
  const wantRef = job.source.digest ?? job.source.tag ?? 'latest';
  let m = await fetchManifestBytes(client, wantRef);
  const topDigest = m.digest;
  const manifestDigests: string[] = [];
  let parsed = parseManifest(m.data, m.contentType);
  for (let depth = 0; parsed.kind === 'index'; depth++) {
    if (depth >= MAX_INDEX_DEPTH) throw invalidArgument('image index nesting is too deep');
    job.hold?.([m.digest]);
    await job.content.put(m.digest, m.data);
    manifestDigests.push(m.digest);
    const entry = choosePlatform(parsed, job.platform ?? hostPlatform());
    m = await fetchManifestBytes(client, entry.digest);
    parsed = parseManifest(m.data, m.contentType);
  }
  const manifest: ImageManifest = parsed;
  job.hold?.([m.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]);
  await job.content.put(m.digest, m.data);
  manifestDigests.push(m.digest);

  if (manifest.config.size > MAX_CONFIG_BYTES) throw invalidArgument(`image config is ${manifest.config.size} bytes, over the ${MAX_CONFIG_BYTES} limit`);
  await fetchBlob(job, client, manifest.config.digest, manifest.config.size);
  const config = parseConfig(await job.content.read(manifest.config.digest));
  const diffIds = config.rootfs!.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw invalidArgument(`image config lists ${diffIds.length} layers, the manifest ${manifest.layers.length}`);
  }
  const chainIds = computeChainIds(diffIds);
  // before any is looked up: one that exists now (and is skipped) must still exist when the record is saved
  job.hold?.(chainIds);
  const progress = job.progress;
  if (progress) progress.layers = manifest.layers.map((l) => ({ digest: l.digest, size: l.size, downloaded: 0, state: 'waiting' }));

  await mapLimit(manifest.layers, PARALLEL_LAYERS, async (layer, i) => {
    job.signal?.throwIfAborted();
    const p = progress?.layers[i];
    if (job.snapshots.get(chainIds[i])) {
      if (p) p.state = 'exists';
      return;
    }
    // Every layer has its own snapshot dir, so unpacking in parallel is safe: order matters only when the
    // overlay stacks them (rootfs.ts), where it is strict. A layer is unpacked while it downloads when this
    // pull does the download; the snapshot is committed only once both the blob and the diff_id verified.
    await job.snapshots.ensure(chainIds[i], (fsDir) => unpackLayerInto(job, client, layer, diffIds[i], fsDir, p), job.signal);
    if (p) {
      p.state = 'done';
      p.downloaded = layer.size;
    }
  });

  const size = manifest.config.size + manifest.layers.reduce((a, l) => a + l.size, 0);
  return {
    id: manifest.config.digest,
    topDigest,
    manifestDigests,
    layers: manifest.layers,
    diffIds,
    chainIds,
    size,
    config,
  };
}
