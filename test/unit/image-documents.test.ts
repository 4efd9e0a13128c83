// Manifests, indexes and configs as registries serve them, hostile ones included: what is refused at the pull
// (INVALID_ARGUMENT) instead of being stored and breaking later calls; and an image record that cannot be
// written is not listed.
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, parseManifest, MAX_LAYERS } from '../../src/image/manifest.js';
import { ImageStore, type ImageRecord } from '../../src/image/image-store.js';
import { imageUser } from '../../src/cri/image-service.js';
import { overlayOptions } from '../../src/image/rootfs.js';

const digest = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const config = (c: Record<string, unknown>) => json({ architecture: 'amd64', os: 'linux', config: c, rootfs: { type: 'layers', diff_ids: [digest(1)] } });
const manifest = (layers: { digest: string; size: number }[]) =>
  json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digest(9), size: 10 }, layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })) });
const refused = (f: () => unknown) => expect(f).toThrow(expect.objectContaining({ kind: 'invalid_argument' }));

describe('image configs', () => {
  it('refuses fields of the wrong type that later calls would trip over', () => {
    for (const bad of [{ User: 0 }, { User: ['root'] }, { Env: 'PATH=/bin' }, { Env: [1] }, { Cmd: 'sh' }, { Entrypoint: [{}] }, { WorkingDir: 1 }, { StopSignal: 15 }, { Labels: { a: 1 } }, { Labels: [] }, { ExposedPorts: 'x' }, { Volumes: 1 }]) {
      refused(() => parseConfig(config(bad)));
    }
    const ok = parseConfig(config({ User: '1000:1000', Env: ['A=1'], Cmd: null, Entrypoint: ['sh'], Labels: null, ExposedPorts: { '80/tcp': {} } }));
    expect(ok.config?.User).toBe('1000:1000');
    refused(() => parseConfig(json({ config: {}, rootfs: { diff_ids: [digest(1)] }, architecture: 7 })));
    // null is a field's zero value, as Go's decoding in containerd and CRI-O reads it
    const nulls = parseConfig(config({ User: null, WorkingDir: null, StopSignal: null, Env: ['A=1', null], Cmd: null, Labels: { a: null }, Volumes: null }));
    expect(nulls.config).toMatchObject({ User: '', WorkingDir: '', StopSignal: '', Env: ['A=1', ''], Cmd: null, Labels: { a: '' }, Volumes: null });
    expect(parseConfig(json({ config: null, rootfs: { diff_ids: [digest(1)] } })).config).toBeNull();
  });

  it('refuses JSON nested deeper than any real document (it overflowed the stack when the record was written)', () => {
    const deep = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["${digest(1)}"]},"x":${'['.repeat(6000)}${']'.repeat(6000)}}`;
    refused(() => parseConfig(Buffer.from(deep)));
    refused(() => parseManifest(Buffer.from(`{"schemaVersion":2,"y":${'{"a":'.repeat(300)}1${'}'.repeat(300)}}`), undefined));
    // brackets inside strings are text, not nesting
    expect(parseConfig(config({ Cmd: ['['.repeat(5000)] })).config?.Cmd?.[0]).toHaveLength(5000);
  });

  it('matches field names case-insensitively when the exact one is absent, as Go does', () => {
    const c = parseConfig(json({ Architecture: 'amd64', OS: 'linux', Config: { user: '1000', env: ['A=1'], WORKINGDIR: '/w' }, RootFS: { Type: 'layers', Diff_IDs: [digest(1)] } }));
    expect(c.config).toMatchObject({ User: '1000', Env: ['A=1'], WorkingDir: '/w' });
    expect(c.rootfs?.diff_ids).toEqual([digest(1)]);
    // the exact name wins over another spelling
    expect(parseConfig(config({ User: 'exact', user: 'other' })).config?.User).toBe('exact');
    refused(() => parseConfig(config({ user: 0 })));
  });

  it('imageUser reads only a string (records stored before the check existed)', () => {
    expect(imageUser(0 as unknown as string)).toEqual({ username: '' });
    expect(imageUser('1000:1000')).toEqual({ uid: '1000', username: '' });
  });
});

describe('manifests', () => {
  it('an image of MAX_LAYERS layers always fits one page of overlay mount options', () => {
    // snapshot ids of 6 digits (a million snapshots made on the node) and a long root path
    const root = `/${'r'.repeat(200)}`;
    const lowers = Array.from({ length: MAX_LAYERS }, (_, i) => `${900000 + i}/fs`);
    expect(() => overlayOptions(lowers, `${root}/rootfs/${'c'.repeat(64)}/upper`, `${root}/rootfs/${'c'.repeat(64)}/work`)).not.toThrow();
    expect(() => overlayOptions([...lowers, ...lowers], '/u', '/w')).toThrow(expect.objectContaining({ kind: 'failed_precondition' }));
  });

  it('refuses more layers than overlayfs can stack, and sizes that add up past what can be counted', () => {
    refused(() => parseManifest(manifest(Array.from({ length: MAX_LAYERS + 1 }, (_, i) => ({ digest: digest(i), size: 1 }))), undefined));
    expect((parseManifest(manifest(Array.from({ length: MAX_LAYERS }, (_, i) => ({ digest: digest(i), size: 1 }))), undefined) as { layers: unknown[] }).layers).toHaveLength(MAX_LAYERS);
    refused(() => parseManifest(manifest([{ digest: digest(1), size: 5e15 }, { digest: digest(2), size: 5e15 }]), undefined));
  });
});

describe('image records', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a record that cannot be written is not listed, and takes no tag from another image', async () => {
    dir = await mkdtemp(join(tmpdir(), 'skiff-records-'));
    const store = new ImageStore(dir);
    await store.init(() => {});
    const rec = (id: number, tags: string[], cfg: Record<string, unknown> = {}): ImageRecord => ({
      id: digest(id),
      repoTags: tags,
      repoDigests: [],
      manifestDigests: [],
      layers: [],
      diffIds: [],
      chainIds: [],
      size: 1,
      runtimeHandler: '',
      userSpecifiedImage: '',
      pinned: false,
      config: cfg,
      pulledAt: 0,
    });
    await store.save(rec(1, ['docker.io/library/a:1']));
    // a value JSON cannot write (BigInt) stands for any failure to write the record
    await expect(store.save(rec(2, ['docker.io/library/a:1'], { bad: 1n }))).rejects.toThrow();
    expect(store.get(digest(2))).toBeUndefined();
    expect(store.get(digest(1))?.repoTags).toEqual(['docker.io/library/a:1']);
    const reloaded = new ImageStore(dir);
    await reloaded.init(() => {});
    expect(reloaded.all().map((r) => [r.id, r.repoTags])).toEqual([[digest(1), ['docker.io/library/a:1']]]);
  });

  it('a tag left on two records (a crash while it moved) stays with the newer pull', async () => {
    dir = await mkdtemp(join(tmpdir(), 'skiff-records-'));
    const records = join(dir, 'records');
    await mkdir(records, { recursive: true });
    const rec = (id: number, pulledAt: number) => ({ id: digest(id), repoTags: ['docker.io/library/a:1', `docker.io/library/only${id}:1`], repoDigests: [], manifestDigests: [], layers: [], diffIds: [], chainIds: [], size: 1, runtimeHandler: '', userSpecifiedImage: '', pinned: false, config: {}, pulledAt });
    // the newer one is written first, so reading order does not decide
    await writeFile(join(records, `${digest(2).slice(7)}.json`), JSON.stringify(rec(2, 2000)));
    await writeFile(join(records, `${digest(1).slice(7)}.json`), JSON.stringify(rec(1, 1000)));
    const store = new ImageStore(dir);
    await store.init(() => {});
    expect(store.resolve('a:1')?.id).toBe(digest(2));
    expect(store.get(digest(1))?.repoTags).toEqual(['docker.io/library/only1:1']);
    const again = new ImageStore(dir);
    await again.init(() => {});
    expect(again.get(digest(1))?.repoTags).toEqual(['docker.io/library/only1:1']);
  });
});
