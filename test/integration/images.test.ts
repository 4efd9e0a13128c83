// Issue 3: the ImageService against a real daemon, a real docker-registry (plain, Basic, Bearer) and
// scripted HTTP servers for what a well-behaved registry never does (wrong digest, truncated blob, redirect).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server, type IncomingMessage } from 'node:http';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { daemonsPerTest, startDaemon, runCli, makeScratchDir, type TestDaemon } from '../helpers/daemon.js';
import { startRegistry, pushBusybox, pushImage, pushBlob, pushManifest, loadBusybox, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, image, index, layer, ociArchive, dockerArchive, type BuiltImage, type Blob } from '../helpers/images.js';
import { imageCall } from '../../src/cli/client.js';

const daemon = daemonsPerTest();

function codeOf(p: Promise<unknown>): Promise<number | string> {
  return p.then(
    () => 'ok',
    (e: { code: number }) => e.code,
  );
}
function errOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: -1, details: 'succeeded' }),
    (e: { code: number; details: string }) => e,
  );
}

const pull = (d: TestDaemon, image: string, extra: { handler?: string; auth?: { username: string; password: string } } = {}) =>
  imageCall(d.client, 'PullImage', { image: { image, runtime_handler: extra.handler ?? '' }, auth: extra.auth ?? null });

async function filesUnder(dir: string): Promise<string[]> {
  try {
    return await readdir(dir, { recursive: true });
  } catch {
    return [];
  }
}

let plain: TestRegistry;
let busyboxName: string;
beforeAll(async () => {
  plain = await startRegistry();
  busyboxName = await pushBusybox(plain);
});
afterAll(async () => {
  await plain.stop();
});

describe('PullImage / ListImages / ImageStatus against docker-registry', () => {
  it('pulls busybox and reports tags, digests, size, user and the verbose config', async () => {
    const d = await daemon();
    const img = await busyboxImage();
    const res = await pull(d, busyboxName);
    expect(res.image_ref).toBe(img.config.digest);
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: busyboxName }, verbose: true });
    expect(st.image!.id).toBe(img.config.digest);
    expect(st.image!.repo_tags).toEqual([busyboxName]);
    expect(st.image!.repo_digests).toEqual([`${plain.host}/library/busybox@${img.manifest.digest}`]);
    expect(Number(st.image!.size)).toBe(img.config.size + img.layers[0].size);
    expect(st.image!.spec!.runtime_handler).toBe('runc');
    expect(st.image!.spec!.user_specified_image).toBe(busyboxName);
    expect(JSON.parse(st.info.info)).toMatchObject({ imageSpec: { config: { Cmd: ['sh'] } } });
    // every way kubelet and users name it resolves to the same image
    for (const name of [img.config.digest, img.config.digest.slice(7, 19), `${plain.host}/library/busybox@${img.manifest.digest}`]) {
      const s = await imageCall(d.client, 'ImageStatus', { image: { image: name } });
      expect(s.image?.id).toBe(img.config.digest);
    }
    const list = await imageCall(d.client, 'ListImages', {});
    expect(list.images.map((i) => i.id)).toEqual([img.config.digest]);
    const fs = await imageCall(d.client, 'ImageFsInfo', {});
    expect(Number(fs.image_filesystems[0].used_bytes!.value)).toBeGreaterThan(img.layers[0].size);
    expect(Number(fs.image_filesystems[0].inodes_used!.value)).toBeGreaterThan(5);
    expect(fs.container_filesystems[0].fs_id!.mountpoint).toContain('rootfs');
    // unpacked exactly once into a chain-ID snapshot, with its symlinks
    const snaps = await filesUnder(join(d.root, 'images/runc/snapshots'));
    expect(snaps).toContain('1/fs/bin/busybox');
    expect(snaps).toContain('1/fs/bin/sh');
  });

  it('uses the image user: numeric uid or user name', async () => {
    const l = await layer([{ name: 'x', content: 'x' }]);
    await pushImage(plain, 'users/numeric', 'v1', image([l], { config: { User: '1000:1000' } }));
    await pushImage(plain, 'users/named', 'v1', image([l], { config: { User: 'nginx' } }));
    const d = await daemon();
    await pull(d, `${plain.host}/users/numeric:v1`);
    await pull(d, `${plain.host}/users/named:v1`);
    const a = await imageCall(d.client, 'ImageStatus', { image: { image: `${plain.host}/users/numeric:v1` } });
    const b = await imageCall(d.client, 'ImageStatus', { image: { image: `${plain.host}/users/named:v1` } });
    expect(a.image!.uid?.value).toBe('1000');
    expect(b.image!.uid).toBeNull();
    expect(b.image!.username).toBe('nginx');
  });

  it('picks this platform from an index, skips attestations, and names the platform when none matches', async () => {
    const l = await layer([{ name: 'hello', content: 'amd64' }], 'zstd');
    const amd = image([l]);
    const arm = image([await layer([{ name: 'hello', content: 'arm' }])], { architecture: 'arm64' });
    const att = image([await layer([{ name: 'att', content: 'attestation' }])]);
    for (const i of [amd, arm, att]) {
      for (const b of [i.config, ...i.layers]) await pushBlob(plain, 'multi/app', b);
      await pushManifest(plain, 'multi/app', i.manifest.digest, i.manifest);
    }
    const good = index([
      { manifest: att.manifest, platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } },
      { manifest: arm.manifest, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { manifest: amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    // nested: the tag points at an index whose entry is itself an index
    const outer = index([{ manifest: good }]);
    await pushManifest(plain, 'multi/app', good.digest, good);
    await pushManifest(plain, 'multi/app', 'nested', outer);
    await pushManifest(plain, 'multi/app', 'v1', good);
    const foreign = index([{ manifest: arm.manifest, platform: { os: 'linux', architecture: 's390x' } }]);
    await pushManifest(plain, 'multi/app', 'foreign', foreign);
    const d = await daemon();
    expect((await pull(d, `${plain.host}/multi/app:v1`)).image_ref).toBe(amd.config.digest);
    expect((await pull(d, `${plain.host}/multi/app:nested`)).image_ref).toBe(amd.config.digest);
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: `${plain.host}/multi/app:v1` } });
    expect(st.image!.repo_digests).toContain(`${plain.host}/multi/app@${good.digest}`);
    const e = await errOf(pull(d, `${plain.host}/multi/app:foreign`));
    expect(e.code).toBe(status.NOT_FOUND);
    expect(e.details).toContain('linux/amd64');
  });

  it('answers bad input with the right codes and keeps working', async () => {
    const d = await daemon();
    for (const bad of ['', 'UPPER/case', 'a//b', 'busybox@sha256:123', 'host:99999/x', 'x:tag with space', ':tag', 'a'.repeat(5000)]) {
      expect(await codeOf(pull(d, bad))).toBe(bad === '' ? status.INVALID_ARGUMENT : status.INVALID_ARGUMENT);
    }
    expect(await codeOf(imageCall(d.client, 'PullImage', { image: null }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(pull(d, busyboxName, { handler: 'nope' }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(pull(d, `${plain.host}/does/not-exist:v1`))).toBe(status.NOT_FOUND);
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: 'never-pulled:v1' } });
    expect(st.image).toBeNull();
    expect(await codeOf(imageCall(d.client, 'ImageStatus', { image: { image: '' } }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(imageCall(d.client, 'RemoveImage', { image: { image: 'never-pulled:v1' } }))).toBe('ok');
    expect((await imageCall(d.client, 'ListImages', { filter: { image: { image: 'never-pulled' } } })).images).toEqual([]);
    await pull(d, busyboxName);
    expect((await imageCall(d.client, 'ListImages', {})).images).toHaveLength(1);
  });
});

describe('registry authentication', () => {
  it('Basic: 401 without credentials, pull with them', async () => {
    const reg = await startRegistry({ auth: 'basic' });
    try {
      const name = await pushBusybox(reg, 'private/bb', 'v1');
      const d = await daemon();
      const e = await errOf(pull(d, name));
      expect(e.code).toBe(status.PERMISSION_DENIED);
      expect(e.details).toMatch(/credentials required|unauthorized/);
      expect(await codeOf(pull(d, name, { auth: { username: reg.username, password: 'wrong' } }))).toBe(status.PERMISSION_DENIED);
      expect((await pull(d, name, { auth: { username: reg.username, password: reg.password } })).image_ref).toMatch(/^sha256:/);
      // crictl-style --creds through the CLI
      const r = await runCli(['-r', d.socket, 'pull', '--creds', `${reg.username}:${reg.password}`, name]);
      // not a terminal: plain progress lines, at least each layer's final state
      expect(r.stderr).toMatch(/^[0-9a-f]{12}: (done|exists) \(\d+ bytes\)\n$/);
      expect(r.code).toBe(0);
    } finally {
      await reg.stop();
    }
  });

  it('Bearer: token from the realm with credentials, cached for the pull', async () => {
    const reg = await startRegistry({ auth: 'bearer' });
    try {
      const name = await pushBusybox(reg, 'tok/bb', 'v1');
      const d = await daemon();
      expect(await codeOf(pull(d, name))).toBe(status.PERMISSION_DENIED);
      const before = reg.tokenRequests();
      expect((await pull(d, name, { auth: { username: reg.username, password: reg.password } })).image_ref).toMatch(/^sha256:/);
      // one token for manifest, config and layer: not one per request
      expect(reg.tokenRequests() - before).toBe(1);
    } finally {
      await reg.stop();
    }
  });

  it('reads credentials from registry.auth_file (docker config.json)', async () => {
    const reg = await startRegistry({ auth: 'basic' });
    try {
      const name = await pushBusybox(reg, 'cfg/bb', 'v1');
      const dir = await makeScratchDir();
      const authFile = join(dir, 'auth.json');
      await writeFile(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${reg.username}:${reg.password}`).toString('base64') } } }));
      const d = await daemon({ dir, config: `[registry]\nauth_file = "${authFile}"\n` });
      expect((await pull(d, name)).image_ref).toMatch(/^sha256:/);
    } finally {
      await reg.stop();
    }
  });
});

/** A scripted registry for what docker-registry never does. `blobs` maps digest -> handler. */
async function scripted(manifests: Record<string, Blob>, blobs: Record<string, (req: IncomingMessage, res: import('node:http').ServerResponse) => void>): Promise<{ host: string; server: Server; seen: IncomingMessage[] }> {
  const seen: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    seen.push(req);
    const m = /^\/v2\/.+\/(manifests|blobs)\/([^/]+)$/.exec(req.url ?? '');
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    if (m?.[1] === 'manifests' && manifests[m[2]]) {
      const b = manifests[m[2]];
      return void res.writeHead(200, { 'content-type': b.mediaType, 'content-length': b.size }).end(b.data);
    }
    if (m?.[1] === 'blobs' && blobs[m[2]]) return blobs[m[2]](req, res);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { host: `127.0.0.1:${(server.address() as { port: number }).port}`, server, seen };
}

function serve(b: Blob, body: Buffer = b.data, length: number = body.length) {
  return (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
    res.writeHead(200, { 'content-length': length, 'content-type': 'application/octet-stream' });
    if (length > body.length) {
      res.write(body);
      // a connection that dies mid-body
      setTimeout(() => res.destroy(), 20);
    } else res.end(body);
  };
}

describe('registries that misbehave', () => {
  let img: BuiltImage;
  beforeAll(async () => {
    img = image([await layer([{ name: 'f', content: randomBytes(100_000) }])]);
  });

  it('a blob whose content does not match its digest fails the pull and stores nothing', async () => {
    const bad = Buffer.from(img.layers[0].data);
    bad[bad.length - 10] ^= 0xff;
    const s = await scripted({ v1: img.manifest }, { [img.config.digest]: serve(img.config), [img.layers[0].digest]: serve(img.layers[0], bad) });
    try {
      const d = await daemon();
      const e = await errOf(pull(d, `${s.host}/x/y:v1`));
      expect(e.code).not.toBe(-1);
      expect(e.details).toContain(img.layers[0].digest);
      expect((await imageCall(d.client, 'ListImages', {})).images).toEqual([]);
      const blobs = await filesUnder(join(d.root, 'images/runc/blobs/sha256'));
      expect(blobs).not.toContain(img.layers[0].digest.slice(7));
      expect(await filesUnder(join(d.root, 'images/runc/ingest'))).toEqual([]);
      expect(await filesUnder(join(d.root, 'images/runc/snapshots'))).toEqual([]);
    } finally {
      s.server.close();
    }
  });

  it('a truncated blob is retried, then fails without committing anything', async () => {
    let calls = 0;
    const l = img.layers[0];
    const s = await scripted(
      { v1: img.manifest },
      {
        [img.config.digest]: serve(img.config),
        [l.digest]: (req, res) => {
          calls++;
          serve(l, l.data.subarray(0, 1000), l.size)(req, res);
        },
      },
    );
    try {
      const d = await daemon();
      const e = await errOf(pull(d, `${s.host}/x/y:v1`));
      expect(e.code).toBe(status.UNAVAILABLE);
      expect(calls).toBeGreaterThan(1);
      expect(await filesUnder(join(d.root, 'images/runc/blobs/sha256'))).not.toContain(l.digest.slice(7));
      // a truncated first attempt followed by a good one succeeds
      calls = 0;
      s.server.removeAllListeners('request');
      let n = 0;
      const s2 = await scripted({ v1: img.manifest }, { [img.config.digest]: serve(img.config), [l.digest]: (req, res) => (n++ === 0 ? serve(l, l.data.subarray(0, 1000), l.size) : serve(l))(req, res) });
      try {
        expect((await pull(d, `${s2.host}/x/y:v1`)).image_ref).toBe(img.config.digest);
      } finally {
        s2.server.close();
      }
    } finally {
      s.server.close();
    }
  });

  it('follows a redirect to blob storage without sending the registry credentials there', async () => {
    const storage = await scripted({}, { [img.layers[0].digest]: serve(img.layers[0]) });
    const storageUrl = (req: IncomingMessage) => `http://${storage.host}${req.url}`;
    const s = await scripted(
      { v1: img.manifest },
      {
        [img.config.digest]: serve(img.config),
        [img.layers[0].digest]: (req, res) => {
          if (req.headers.authorization !== `Basic ${Buffer.from('u:p').toString('base64')}`) {
            return void res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
          }
          res.writeHead(307, { location: storageUrl(req) }).end();
        },
      },
    );
    // the manifest and config need no auth on this server; the layer does
    try {
      const d = await daemon();
      expect((await pull(d, `${s.host}/x/y:v1`, { auth: { username: 'u', password: 'p' } })).image_ref).toBe(img.config.digest);
      expect(storage.seen.length).toBeGreaterThan(0);
      for (const r of storage.seen) expect(r.headers.authorization).toBeUndefined();
    } finally {
      s.server.close();
      storage.server.close();
    }
  });

  it('refuses Docker schema 1 with a clear message', async () => {
    const m1: Blob = { digest: '', size: 0, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', data: Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x/y', tag: 'v1', fsLayers: [] })) };
    m1.size = m1.data.length;
    const s = await scripted({ v1: m1 }, {});
    try {
      const d = await daemon();
      const e = await errOf(pull(d, `${s.host}/x/y:v1`));
      expect(e.code).toBe(status.FAILED_PRECONDITION);
      expect(e.details).toContain('schema 1');
    } finally {
      s.server.close();
    }
  });

  it('falls back from a dead mirror (hosts.toml) to the upstream', async () => {
    const dir = await makeScratchDir();
    const certs = join(dir, 'certs.d');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(certs, plain.host), { recursive: true });
    await writeFile(join(certs, plain.host, 'hosts.toml'), `server = "http://${plain.host}"\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n`);
    const d = await daemon({ dir, config: `[registry]\nconfig_path = "${certs}"\n` });
    expect((await pull(d, busyboxName)).image_ref).toMatch(/^sha256:/);
  });
});

describe('per-handler stores, removal, GC, restart, load', () => {
  it('keeps the same image separately for runc and crun', async () => {
    const d = await daemon();
    await pull(d, busyboxName, { handler: 'runc' });
    await pull(d, busyboxName, { handler: 'crun' });
    const all = await imageCall(d.client, 'ListImages', {});
    expect(all.images.map((i) => i.spec!.runtime_handler).sort()).toEqual(['crun', 'runc']);
    const crun = await imageCall(d.client, 'ListImages', { filter: { image: { image: '', runtime_handler: 'crun' } } });
    expect(crun.images).toHaveLength(1);
    await imageCall(d.client, 'RemoveImage', { image: { image: busyboxName, runtime_handler: 'crun' } });
    expect((await imageCall(d.client, 'ImageStatus', { image: { image: busyboxName, runtime_handler: 'crun' } })).image).toBeNull();
    expect((await imageCall(d.client, 'ImageStatus', { image: { image: busyboxName, runtime_handler: 'runc' } })).image).not.toBeNull();
    expect(await filesUnder(join(d.root, 'images/crun/blobs/sha256'))).toEqual([]);
    expect(await filesUnder(join(d.root, 'images/crun/snapshots'))).toEqual([]);
  });

  it('RemoveImage garbage-collects only what no other image uses', async () => {
    const shared = await layer([{ name: 'shared', content: 'base' }]);
    const a = image([shared, await layer([{ name: 'a', content: 'a' }])]);
    const b = image([shared, await layer([{ name: 'b', content: 'b' }])]);
    await pushImage(plain, 'gc/a', 'v1', a);
    await pushImage(plain, 'gc/b', 'v1', b);
    const d = await daemon();
    await pull(d, `${plain.host}/gc/a:v1`);
    await pull(d, `${plain.host}/gc/b:v1`);
    expect((await filesUnder(join(d.root, 'images/runc/snapshots'))).filter((f) => f.endsWith('/fs/b'))).toHaveLength(1);
    await imageCall(d.client, 'RemoveImage', { image: { image: a.config.digest } });
    const blobs = await filesUnder(join(d.root, 'images/runc/blobs/sha256'));
    expect(blobs).toContain(shared.digest.slice(7));
    expect(blobs).not.toContain(a.layers[1].digest.slice(7));
    expect(blobs).not.toContain(a.config.digest.slice(7));
    const snaps = await filesUnder(join(d.root, 'images/runc/snapshots'));
    expect(snaps.filter((f) => /^\d+\/fs\/(shared|a|b)$/.test(f)).map((f) => f.split('/')[2]).sort()).toEqual(['b', 'shared']);
    // by tag through the CLI
    const r = await runCli(['-r', d.socket, 'rmi', `${plain.host}/gc/b:v1`]);
    expect(r.code).toBe(0);
    expect(await filesUnder(join(d.root, 'images/runc/blobs/sha256'))).toEqual([]);
    expect(await readdir(join(d.root, 'images/runc/snapshots'))).toEqual([]);
  });

  it('keeps images across a daemon restart', async () => {
    const dir = await makeScratchDir();
    const d1 = await startDaemon({ dir });
    await pull(d1, busyboxName);
    await pull(d1, busyboxName, { handler: 'crun' });
    await d1.cleanup();
    const d2 = await daemon({ dir });
    const list = await imageCall(d2.client, 'ListImages', {});
    expect(list.images).toHaveLength(2);
    expect(list.images[0].repo_tags).toEqual([busyboxName]);
  });

  it('skiff load imports OCI and docker-save archives under their own names', async () => {
    const d = await daemon();
    expect(await loadBusybox(d)).toBe('docker.io/library/busybox:latest');
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: 'busybox' } });
    expect(st.image!.repo_tags).toEqual(['docker.io/library/busybox:latest']);
    const img = await busyboxImage();
    const dir = await makeScratchDir();
    await writeFile(join(dir, 'd.tar'), await dockerArchive(img, 'example.com/team/tool:v2'));
    const r = await runCli(['-r', d.socket, 'load', join(dir, 'd.tar')]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('example.com/team/tool:v2');
    const st2 = await imageCall(d.client, 'ImageStatus', { image: { image: 'example.com/team/tool:v2' } });
    expect(st2.image!.id).toBe(img.config.digest);
    await writeFile(join(dir, 'o.tar'), await ociArchive(img, 'latest'));
    const r2 = await runCli(['-r', d.socket, 'load', join(dir, 'o.tar')]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('--name');
    const r3 = await runCli(['-r', d.socket, 'load', '--name', 'mine/bb:1', join(dir, 'o.tar')]);
    expect(r3.code).toBe(0);
    const r4 = await runCli(['-r', d.socket, 'images']);
    expect(r4.stdout).toContain('docker.io/mine/bb');

    // crictl's habits: a repository without a tag lists all its tags (and only its rows), -v, .info
    const repo = await runCli(['-r', d.socket, 'images', 'mine/bb']);
    expect(repo.stdout.split('\n').slice(1).filter(Boolean)).toEqual([expect.stringMatching(/^docker\.io\/mine\/bb\s+1\s/)]);
    expect((await runCli(['-r', d.socket, 'images', 'mine/bb:2'])).stdout.split('\n').filter(Boolean)).toHaveLength(1);
    const verbose = await runCli(['-r', d.socket, 'images', '-v', 'mine/bb']);
    expect(verbose.stdout).toContain(`ID: ${img.config.digest}\n`);
    expect(verbose.stdout).toContain('RepoTags: docker.io/mine/bb:1\n');
    const inspected = JSON.parse((await runCli(['-r', d.socket, 'inspecti', 'mine/bb:1'])).stdout) as { info: { imageSpec: unknown } };
    expect(inspected.info.imageSpec).toBeDefined();
    const missing = await runCli(['-r', d.socket, 'rmi', 'mine/bb:2']);
    expect([missing.code, missing.stderr]).toEqual([1, expect.stringContaining('for the default runtime handler')]);
  });
});
