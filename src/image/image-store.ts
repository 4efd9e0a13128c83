// Image records of one runtime handler: what a pull produced (IDs, names, layers, config), one JSON file per
// image written atomically, and name resolution (by ID, ID prefix, tag, digest or short name).
import { join } from 'node:path';
import { RecordStore } from '../store/record-store.js';
import { parseReference, formatReference, repoName, isDigest } from './reference.js';
import type { ImageConfig, Descriptor } from './manifest.js';

export interface ImageRecord {
  /** The image ID: its config digest ("sha256:…"). */
  id: string;
  /** Normalised name:tag references pointing at this image. */
  repoTags: string[];
  /** name@sha256:… (the manifest or index digest each name resolved to). */
  repoDigests: string[];
  /** Digests of manifests/indexes stored for this image (kept by GC). */
  manifestDigests: string[];
  layers: Descriptor[];
  diffIds: string[];
  chainIds: string[];
  /** Compressed size of config + layers, as registries and crictl report it. */
  size: number;
  runtimeHandler: string;
  /** The name the user asked for, as typed (KEP-4216). */
  userSpecifiedImage: string;
  pinned: boolean;
  config: ImageConfig;
  pulledAt: number;
}

function validate(v: unknown): ImageRecord {
  const r = v as ImageRecord;
  if (typeof r?.id !== 'string' || !isDigest(r.id) || !Array.isArray(r.repoTags) || !Array.isArray(r.chainIds) || !Array.isArray(r.layers)) {
    throw new Error('not an image record');
  }
  return r;
}

export class ImageStore {
  private readonly records: RecordStore<ImageRecord>;
  private readonly images = new Map<string, ImageRecord>();

  constructor(dir: string) {
    this.records = new RecordStore(join(dir, 'records'), validate);
  }

  async init(warn: (msg: string) => void): Promise<void> {
    const { records, problems } = await this.records.loadAll();
    for (const p of problems) warn(`image record ${p.file} is damaged (${p.error}); moved aside`);
    for (const r of records.values()) this.images.set(r.id, r);
    await this.settleTags(warn);
  }

  /**
   * A tag on two records (the daemon died while a pull moved it) stays with the newest pull, as if the move
   * had finished; the others are rewritten without it.
   */
  private async settleTags(warn: (msg: string) => void): Promise<void> {
    const owner = new Map<string, ImageRecord>();
    for (const r of this.all()) {
      for (const t of r.repoTags) {
        const o = owner.get(t);
        if (!o || r.pulledAt > o.pulledAt || (r.pulledAt === o.pulledAt && r.id > o.id)) owner.set(t, r);
      }
    }
    for (const r of this.all()) {
      const kept = r.repoTags.filter((t) => owner.get(t) === r);
      if (kept.length === r.repoTags.length) continue;
      warn(`image ${r.id}: tags ${r.repoTags.filter((t) => !kept.includes(t)).join(', ')} belong to a newer pull; removed`);
      r.repoTags = kept;
      await this.records.save(r.id.slice(7), r);
    }
  }

  all(): ImageRecord[] {
    return [...this.images.values()];
  }

  get(id: string): ImageRecord | undefined {
    return this.images.get(id);
  }

  /**
   * Finds an image by what a user or kubelet names: full ID, "sha256:" less ID, unique ID prefix (≥ 12 hex),
   * name:tag, name@digest, or a short name normalised like a pull (busybox -> docker.io/library/busybox:latest).
   * Returns undefined for unknown names; throws INVALID_ARGUMENT only for unparsable references.
   */
  resolve(name: string): ImageRecord | undefined {
    const n = name.trim();
    const byId = this.images.get(n) ?? this.images.get(`sha256:${n}`);
    if (byId) return byId;
    if (/^(sha256:)?[a-f0-9]{12,63}$/.test(n)) {
      const hex = n.replace(/^sha256:/, '');
      const hits = this.all().filter((r) => r.id.slice(7).startsWith(hex));
      if (hits.length === 1) return hits[0];
    }
    const ref = parseReference(n);
    if (ref.digest) {
      const want = `${repoName(ref)}@${ref.digest}`;
      return this.all().find((r) => r.repoDigests.includes(want) || (r.manifestDigests.includes(ref.digest!) && r.repoDigests.some((d) => d.startsWith(`${repoName(ref)}@`))));
    }
    const tagged = formatReference(ref);
    return this.all().find((r) => r.repoTags.includes(tagged));
  }

  /** Saves a record; a tag moves from any other image to this one (tags are unique per handler). */
  async save(rec: ImageRecord): Promise<ImageRecord[]> {
    // on disk first: a record that cannot be written is neither listed nor takes tags from other images
    // (a crash before the tags moved leaves a tag on two records: init gives it to the newest pull)
    await this.records.save(rec.id.slice(7), rec);
    this.images.set(rec.id, rec);
    const changed: ImageRecord[] = [];
    for (const other of this.all()) {
      if (other.id === rec.id) continue;
      const kept = other.repoTags.filter((t) => !rec.repoTags.includes(t));
      if (kept.length !== other.repoTags.length) {
        other.repoTags = kept;
        await this.records.save(other.id.slice(7), other);
        changed.push(other);
      }
    }
    return changed;
  }

  async remove(id: string): Promise<void> {
    this.images.delete(id);
    await this.records.remove(id.slice(7));
  }
}
