// Issue 3, "registry and layer behaviour that real registries and images demand": scripted HTTP registries
// (real servers on 127.0.0.1, real HTTP) for what docker-registry never does on its own, against a real daemon.
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdir, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { daemonsPerTest, makeScratchDir, runCli, type TestDaemon } from '../helpers/daemon.js';
import { image, layer, layerFromTar, tarOf, type BuiltImage, type Blob } from '../helpers/images.js';
import { imageCall } from '../../src/cli/client.js';
import type { AuthConfig } from '../../src/gen/runtime/v1/AuthConfig.js';

const servers: Server[] = [];
const daemon = daemonsPerTest();
afterEach(() => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

const pull = (d: TestDaemon, name: string, auth: AuthConfig | null = null) => imageCall(d.client, 'PullImage', { image: { image: name }, auth });
function errOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: -1, details: 'succeeded' }),
    (e: { code: number; details: string }) => e,
  );
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A registry scripted by `route`; `log` records "METHOD path range auth" of every request. */
async function server(route: Handler): Promise<{ host: string; log: string[]; requests: IncomingMessage[]; close: () => void }> {
  const log: string[] = [];
  const requests: IncomingMessage[] = [];
  const s = createServer((req, res) => {
    requests.push(req);
    log.push(`${req.method} ${req.url} ${req.headers.range ?? '-'} ${req.headers.authorization ?? '-'}`);
    route(req, res);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const close = () => {
    s.closeAllConnections();
    s.close();
  };
  return { host: `127.0.0.1:${(s.address() as { port: number }).port}`, log, requests, close };
}

/** Routes /v2/<repo>/manifests/<ref> and /v2/<repo>/blobs/<digest> of `img` (tag "v1"); `blob` overrides blobs. */
type BlobAnswer = (b: Blob, req: IncomingMessage, res: ServerResponse) => void;

function registryRoute(img: BuiltImage, blob?: BlobAnswer): Handler {
  const blobs = new Map([img.config, ...img.layers].map((b) => [b.digest, b]));
  return (req, res) => {
    const m = /^\/v2\/.+\/(manifests|blobs)\/([^/?]+)$/.exec(req.url ?? '');
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    if (m?.[1] === 'manifests' && (m[2] === 'v1' || m[2] === img.manifest.digest)) {
      return void res.writeHead(200, { 'content-type': img.manifest.mediaType, 'content-length': img.manifest.size }).end(img.manifest.data);
    }
    const b = m?.[1] === 'blobs' ? blobs.get(m[2]) : undefined;
    if (!b) return void res.writeHead(404).end();
    if (blob) return blob(b, req, res);
    res.writeHead(200, { 'content-length': b.size }).end(b.data);
  };
}

/** Sends the first `n` bytes of a body announced in full, then drops the connection. */
function cutShort(res: ServerResponse, data: Buffer, n: number, headers: Record<string, string | number> = {}, code = 200): void {
  res.writeHead(code, { 'content-length': data.length, ...headers });
  res.write(data.subarray(0, n));
  setTimeout(() => res.destroy(), 30);
}

async function blobsOf(d: TestDaemon): Promise<string[]> {
  return readdir(join(d.root, 'images/runc/blobs/sha256')).catch(() => []);
}

let img: BuiltImage;
let big: Buffer;
beforeAll(async () => {
  big = randomBytes(600_000);
  img = image([await layer([{ name: 'data', content: big }], 'none')]);
});


/** Blob answers that send the first 1000 bytes at once and the rest after `ms`. */
function slowBlob(ms: number): BlobAnswer {
  return (b, _req, res) => {
    res.writeHead(200, { 'content-length': b.size });
    res.write(b.data.subarray(0, 1000));
    setTimeout(() => res.end(b.data.subarray(1000)), ms);
  };
}

describe('downloads', () => {
  it('concurrent pulls of one image share one download of each blob', async () => {
    const l = img.layers[0];
    const s = await server(
      // slow enough that the second pull arrives while the first still downloads
      registryRoute(img, slowBlob(300)),
    );
    const d = await daemon();
    const name = `${s.host}/x/y:v1`;
    const results = await Promise.all([pull(d, name), pull(d, name), pull(d, name)]);
    for (const r of results) expect(r.image_ref).toBe(img.config.digest);
    expect(s.log.filter((e) => e.startsWith(`GET /v2/x/y/blobs/${l.digest}`))).toHaveLength(1);
  });

  it('resumes a cut download with Range when the registry answers 206', async () => {
    const l = img.layers[0];
    let n = 0;
    const s = await server(
      registryRoute(img, (b, req, res) => {
        if (b.digest !== l.digest) return void res.writeHead(200, { 'content-length': b.size }).end(b.data);
        n++;
        const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (n === 1) return cutShort(res, b.data, 250_000);
        if (!m) throw new Error('expected a Range request');
        const from = Number(m[1]);
        const rest = b.data.subarray(from);
        res.writeHead(206, { 'content-length': rest.length, 'content-range': `bytes ${from}-${b.size - 1}/${b.size}` }).end(rest);
      }),
    );
    const d = await daemon();
    expect((await pull(d, `${s.host}/x/y:v1`)).image_ref).toBe(img.config.digest);
    const gets = s.log.filter((e) => e.includes(l.digest));
    expect(gets).toHaveLength(2);
    expect(gets[0]).toContain(' - ');
    expect(gets[1]).toMatch(/ bytes=\d+- /);
    expect(Number(/bytes=(\d+)-/.exec(gets[1])![1])).toBeGreaterThan(0);
    expect(await blobsOf(d)).toContain(l.digest.slice(7));
  });

  it.each([
    ['ignores Range (200 with the whole blob)', (b: Blob, res: ServerResponse) => res.writeHead(200, { 'content-length': b.size }).end(b.data)],
    ['answers 206 from the wrong offset', (b: Blob, res: ServerResponse) => res.writeHead(206, { 'content-length': b.size - 10, 'content-range': `bytes 10-${b.size - 1}/${b.size}` }).end(b.data.subarray(10))],
    ['answers 416', (_b: Blob, res: ServerResponse) => res.writeHead(416).end()],
  ])('restarts from the first byte when the registry %s', async (_what, resumeAnswer) => {
    const l = img.layers[0];
    let n = 0;
    const s = await server(
      registryRoute(img, (b, req, res) => {
        if (b.digest !== l.digest) return void res.writeHead(200, { 'content-length': b.size }).end(b.data);
        n++;
        if (n === 1) return cutShort(res, b.data, 200_000);
        if (req.headers.range) return resumeAnswer(b, res);
        res.writeHead(200, { 'content-length': b.size }).end(b.data);
      }),
    );
    const d = await daemon();
    expect((await pull(d, `${s.host}/x/y:v1`)).image_ref).toBe(img.config.digest);
    expect(await blobsOf(d)).toContain(l.digest.slice(7));
    expect(await readdir(join(d.root, 'images/runc/ingest'))).toEqual([]);
  });

  it('a manifest cut short is retried like a blob, not a failed pull', async () => {
    const inner = registryRoute(img);
    let cuts = 1;
    const reg = await server((req, res) => {
      if (req.url?.includes('/manifests/') && cuts-- > 0) return cutShort(res, img.manifest.data, 19, { 'content-type': img.manifest.mediaType });
      inner(req, res);
    });
    const d = await daemon();
    await pull(d, `${reg.host}/m/cut:v1`);
    expect(reg.log.filter((l) => l.startsWith('GET /v2/m/cut/manifests/v1 ')).length).toBe(2);
  });

  it('treats a missing Content-Length as unknown, not as an empty blob', async () => {
    const s = await server(
      registryRoute(img, (b, _req, res) => {
        // chunked transfer: no Content-Length at all
        res.writeHead(200, { 'transfer-encoding': 'chunked' });
        res.write(b.data.subarray(0, 1000));
        res.end(b.data.subarray(1000));
      }),
    );
    const d = await daemon();
    expect((await pull(d, `${s.host}/x/y:v1`)).image_ref).toBe(img.config.digest);
    expect(s.requests.some((r) => r.url?.includes(img.layers[0].digest))).toBe(true);
  });

  it('a mirror that keeps cutting a blob short is tried first, then the upstream serves it', async () => {
    const l = img.layers[0];
    const mirror = await server(registryRoute(img, (b, _req, res) => (b.digest === l.digest ? cutShort(res, b.data, 1000) : res.writeHead(200, { 'content-length': b.size }).end(b.data))));
    const upstream = await server(registryRoute(img));
    const dir = await makeScratchDir();
    const certs = join(dir, 'certs.d');
    await mkdir(join(certs, upstream.host), { recursive: true });
    await writeFile(join(certs, upstream.host, 'hosts.toml'), `server = "http://${upstream.host}"\n[host."http://${mirror.host}"]\n  capabilities = ["pull", "resolve"]\n`);
    const d = await daemon({ dir, config: `[registry]\nconfig_path = "${certs}"\n` });
    expect((await pull(d, `${upstream.host}/x/y:v1`)).image_ref).toBe(img.config.digest);
    // the mirror resolved the manifest and was asked for the layer (more than once) before the upstream
    expect(mirror.log.filter((e) => e.includes('/manifests/v1'))).toHaveLength(1);
    expect(mirror.log.filter((e) => e.startsWith(`GET /v2/x/y/blobs/${l.digest}`)).length).toBeGreaterThan(1);
    expect(upstream.log.filter((e) => e.includes('/manifests/'))).toEqual([]);
    expect(upstream.log.filter((e) => e.startsWith(`GET /v2/x/y/blobs/${l.digest}`)).length).toBeGreaterThan(0);
    expect(await readdir(join(d.root, 'images/runc/ingest'))).toEqual([]);
  });
});

describe('layers', () => {
  it('accepts Docker-typed zstd layers and refuses a zstd-typed layer without zstd magic', async () => {
    const tar = await tarOf([{ name: 'hello', content: 'zstd' }]);
    const docker = layerFromTar(tar, 'zstd', true);
    expect(docker.mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.zstd');
    const good = image([docker], { docker: true });
    const s1 = await server(registryRoute(good));
    const d = await daemon();
    expect((await pull(d, `${s1.host}/x/y:v1`)).image_ref).toBe(good.config.digest);
    // gzip bytes under a zstd media type (other content: a snapshot of the same diff_id would be reused)
    const gz = layerFromTar(await tarOf([{ name: 'hello', content: 'not zstd' }]), 'gzip');
    const liar = image([{ ...gz, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }]);
    const s2 = await server(registryRoute(liar));
    const e = await errOf(pull(d, `${s2.host}/x/z:v1`));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/zstd's magic/);
    expect((await imageCall(d.client, 'ListImages', {})).images.map((i) => i.id)).toEqual([good.config.digest]);
  });

  it('a device node that cannot be created (no CAP_MKNOD) does not fail the pull', async () => {
    const l = await layer([
      { name: 'dev/', type: 'directory' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/fifo', type: 'fifo' },
      { name: 'etc/.wh.gone', content: '' },
      { name: 'etc/kept', content: 'k' },
    ]);
    const withDev = image([l]);
    const s = await server(registryRoute(withDev));
    const dir = await makeScratchDir();
    // the daemon without CAP_MKNOD, as in a user namespace or a restricted pod
    const wrapper = join(dir, 'node-nomknod');
    await writeFile(wrapper, `#!/bin/sh\nexec setpriv --inh-caps=-mknod --bounding-set=-mknod ${process.execPath} "$@"\n`, { mode: 0o755 });
    const d = await daemon({ dir, execPath: wrapper });
    expect((await pull(d, `${s.host}/x/y:v1`)).image_ref).toBe(withDev.config.digest);
    const snap = join(d.root, 'images/runc/snapshots/1/fs');
    const names = await readdir(join(snap, 'dev'));
    expect(names).toContain('fifo');
    expect(names).not.toContain('null');
    // overlay whiteouts (0/0 devices) need no CAP_MKNOD and are still made
    expect(await readdir(join(snap, 'etc'))).toEqual(expect.arrayContaining(['gone', 'kept']));
    expect(d.logs()).toContain('device nodes could not be created');
  });
});

/** A Bearer registry in front of registryRoute: tokens from its own realm, counted. */
async function bearerRegistry(opts: { tokenDoc: (t: string) => Record<string, unknown>; accept?: (req: IncomingMessage, body: string) => boolean; preissued?: string[] }) {
  const issued = new Set<string>(opts.preissued ?? []);
  const tokenLog: { method: string; url: string; auth?: string; body: string }[] = [];
  const realm = await server((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      tokenLog.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, body });
      if (opts.accept && !opts.accept(req, body)) return void res.writeHead(401).end();
      const t = randomBytes(8).toString('hex');
      issued.add(t);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(opts.tokenDoc(t)));
    });
  });
  const inner = registryRoute(img);
  let unauthorized = 0;
  const reg = await server((req, res) => {
    const t = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (!issued.has(t)) {
      unauthorized++;
      const repo = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(req.url ?? '')?.[1] ?? '';
      return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="quirks",scope="repository:${repo}:pull"` }).end();
    }
    inner(req, res);
  });
  return { host: reg.host, tokenLog, unauthorized: () => unauthorized, regLog: reg.log };
}

describe('authentication quirks', () => {
  it('caches the Bearer challenge per host: a second repository gets its token without a 401 first', async () => {
    const reg = await bearerRegistry({ tokenDoc: (t) => ({ token: t, expires_in: 300 }) });
    const d = await daemon();
    await pull(d, `${reg.host}/team/a:v1`);
    const after = reg.unauthorized();
    expect(after).toBe(1);
    await pull(d, `${reg.host}/team/b:v1`);
    expect(reg.unauthorized()).toBe(after);
    expect(reg.tokenLog.map((t) => new URL(t.url, 'http://x').searchParams.get('scope'))).toEqual(['repository:team/a:pull', 'repository:team/b:pull']);
  });

  it('a remembered challenge whose token server is gone is forgotten: the registry is asked again', async () => {
    const issued = new Set<string>();
    const tokenServer = () =>
      server((_req, res) => {
        const t = randomBytes(8).toString('hex');
        issued.add(t);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: t }));
      });
    const [t1, t2] = [await tokenServer(), await tokenServer()];
    // a token server that refuses credentials: asked once per pull, its refusal stands
    const refusing = await server((_req, res) => void res.writeHead(401).end());
    let realm = t1.host;
    const inner = registryRoute(img);
    const reg = await server((req, res) => {
      if (!issued.has((req.headers.authorization ?? '').replace(/^Bearer /, ''))) {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm}/token",service="moved"` }).end();
      }
      inner(req, res);
    });
    const d = await daemon();
    await pull(d, `${reg.host}/team/a:v1`);
    // the registry moves its token server
    t1.close();
    realm = t2.host;
    await pull(d, `${reg.host}/team/b:v1`);
    expect(t2.log).toHaveLength(1);
    realm = refusing.host;
    t2.close();
    await pull(d, `${reg.host}/team/c:v1`).catch(() => undefined);
    const denied = await errOf(pull(d, `${reg.host}/team/d:v1`, { username: 'u', password: 'wrong' }));
    expect(denied.code).toBe(status.PERMISSION_DENIED);
    // team/c: one refusal after the stale challenge was dropped; team/d: one, not a second login attempt
    expect(refusing.log).toHaveLength(2);
  });

  it('honours expires_in, whether the token comes as `token` or `access_token`', async () => {
    const short = await bearerRegistry({ tokenDoc: (t) => ({ access_token: t, expires_in: 1 }) });
    const long = await bearerRegistry({ tokenDoc: (t) => ({ token: t, expires_in: 300 }) });
    const d = await daemon();
    await pull(d, `${short.host}/x/y:v1`);
    await pull(d, `${long.host}/x/y:v1`);
    await imageCall(d.client, 'RemoveImage', { image: { image: img.config.digest } });
    await new Promise((r) => setTimeout(r, 1200));
    await pull(d, `${short.host}/x/y:v1`);
    await pull(d, `${long.host}/x/y:v1`);
    expect(short.tokenLog).toHaveLength(2);
    expect(long.tokenLog).toHaveLength(1);
  });

  it('PullImageRequest.auth: base64 `auth`, `registry_token` sent as is, `identity_token` as an OAuth2 refresh token', async () => {
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    const reg = await bearerRegistry({
      tokenDoc: (t) => ({ token: t }),
      preissued: ['ready-made-token'],
      accept: (req, body) => {
        if (req.method === 'POST') {
          const f = new URLSearchParams(body);
          return f.get('grant_type') === 'refresh_token' && f.get('refresh_token') === 'refresh-me' && f.get('scope') === 'repository:x/oauth:pull';
        }
        return req.headers.authorization === basic;
      },
    });
    const d = await daemon();
    // a repository per variant: tokens are cached per host and repository
    expect((await errOf(pull(d, `${reg.host}/x/none:v1`))).code).toBe(status.PERMISSION_DENIED);
    expect((await pull(d, `${reg.host}/x/basic:v1`, { auth: Buffer.from('alice:s3cret').toString('base64') })).image_ref).toBe(img.config.digest);
    const before = reg.tokenLog.length;
    expect((await pull(d, `${reg.host}/x/given:v1`, { registry_token: 'ready-made-token' })).image_ref).toBe(img.config.digest);
    expect(reg.tokenLog.length).toBe(before);
    expect(reg.regLog.some((e) => e.startsWith('GET /v2/x/given/manifests/v1') && e.endsWith('Bearer ready-made-token'))).toBe(true);
    expect((await pull(d, `${reg.host}/x/oauth:v1`, { identity_token: 'refresh-me' })).image_ref).toBe(img.config.digest);
    expect(reg.tokenLog.at(-1)!.method).toBe('POST');
  });

  it('re-authenticates when the redirected blob host answers 401 with its own challenge, never sending it our credentials', async () => {
    const l = img.layers[0];
    const storageTokens = new Set<string>();
    const storageRealm = await server((req, res) => {
      const t = randomBytes(8).toString('hex');
      storageTokens.add(t);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: t, expires_in: 60 }));
    });
    const storage = await server((req, res) => {
      const t = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!storageTokens.has(t)) return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${storageRealm.host}/t",service="storage"` }).end();
      res.writeHead(200, { 'content-length': l.size }).end(l.data);
    });
    const basic = `Basic ${Buffer.from('bob:pw').toString('base64')}`;
    const reg = await server(
      registryRoute(img, (b, req, res) => {
        if (req.headers.authorization !== basic) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="reg"' }).end();
        if (b.digest === l.digest) return void res.writeHead(307, { location: `http://${storage.host}/bucket/${b.digest}?sig=1` }).end();
        res.writeHead(200, { 'content-length': b.size }).end(b.data);
      }),
    );
    const d = await daemon();
    expect((await pull(d, `${reg.host}/x/y:v1`, { username: 'bob', password: 'pw' })).image_ref).toBe(img.config.digest);
    expect(storage.log.length).toBe(2);
    for (const r of [...storage.requests, ...storageRealm.requests]) expect(r.headers.authorization ?? '').not.toContain('Basic');
    expect(storage.log[1]).toMatch(/Bearer [0-9a-f]{16}$/);
  });
});

describe('pull progress', () => {
  it('draws a bar per layer on a terminal', async () => {
    const s = await server(
      registryRoute(img, slowBlob(900)),
    );
    const d = await daemon();
    // `script` gives the CLI a pseudo-terminal
    const cmd = `${process.execPath} ${join(import.meta.dirname, '../../bin/skiff')} -r ${d.socket} pull ${s.host}/x/y:v1`;
    const r = await new Promise<{ status: number | null; stdout: string }>((resolve) => {
      const p = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      p.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      p.on('exit', (code) => resolve({ status: code, stdout }));
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('\x1b[');
    expect(r.stdout).toMatch(new RegExp(`${img.layers[0].digest.slice(7, 19)}: (downloading|unpacking) +\\[`));
    expect(r.stdout).toMatch(new RegExp(`${img.layers[0].digest.slice(7, 19)}: done +\\[=+\\]`));
  });
});

describe('a pull whose client goes away', () => {
  const until = async (what: string, check: () => boolean | Promise<boolean>, ms = 10_000) => {
    for (const end = Date.now() + ms; !(await check()); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    }
  };

  it('stops its download; a second pull of the image, waiting behind it, still completes', async () => {
    const l = img.layers[0];
    let stalled: ServerResponse | undefined;
    const s = await server(
      registryRoute(img, (b, _req, res) => {
        if (b.digest === l.digest && !stalled) {
          // the first download of the layer sends a little, then nothing: only the daemon can end it
          stalled = res;
          res.writeHead(200, { 'content-length': b.size });
          res.write(b.data.subarray(0, 1000));
          return;
        }
        res.writeHead(200, { 'content-length': b.size }).end(b.data);
      }),
    );
    const d = await daemon();
    const name = `${s.host}/x/y:v1`;
    const impatient = errOf(imageCall(d.client, 'PullImage', { image: { image: name } }, 1500));
    await until('the layer download to start', () => stalled !== undefined);
    const patient = pull(d, name);
    patient.catch(() => undefined);
    expect((await impatient).code).toBe(status.DEADLINE_EXCEEDED);
    await until('the daemon to drop the stalled download', () => stalled!.destroyed || stalled!.socket?.destroyed !== false);
    expect((await patient).image_ref).toBe(img.config.digest);
  });

  it('skiff -t 1s pull gives up after a second, and the daemon stops the download', async () => {
    let stalled: ServerResponse | undefined;
    const s = await server(
      registryRoute(img, (b, _req, res) => {
        res.writeHead(200, { 'content-length': b.size });
        res.write(b.data.subarray(0, 1000));
        if (b.digest === img.layers[0].digest) stalled = res;
        else res.end(b.data.subarray(1000));
      }),
    );
    const d = await daemon();
    const started = Date.now();
    const r = await runCli(['-r', d.socket, '-t', '1s', 'pull', '--no-progress', `${s.host}/x/y:v1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/deadline/i);
    expect(Date.now() - started).toBeLessThan(8000);
    await until('the daemon to drop the stalled download', () => stalled !== undefined && (stalled.destroyed || stalled.socket?.destroyed !== false));
  });

  it('stops unpacking, keeps nothing of the layer, and records no image', async () => {
    const entries = Array.from({ length: 20_000 }, (_, i) => ({ name: `d${i % 100}/f${i}`, content: 'x' }));
    const many = image([await layer(entries, 'gzip')]);
    const s = await server(registryRoute(many));
    const d = await daemon();
    const name = `${s.host}/many/files:v1`;
    const snapshots = join(d.root, 'images/runc/snapshots');
    const inProgress = async () => (await readdir(snapshots).catch(() => [])).filter((e) => e.startsWith('.tmp-'));
    const result = new Promise<{ code: number }>((resolve) => {
      const call = d.client.image.PullImage({ image: { image: name } }, (err: { code: number } | null) => resolve(err ?? { code: 0 }));
      // cancelled once the unpack is well under way
      void until('the unpack to be under way', async () => {
        const [tmp] = await inProgress();
        return tmp !== undefined && (await readdir(join(snapshots, tmp, 'fs')).catch(() => [])).length >= 50;
      }, 20_000).then(() => call.cancel());
    });
    expect((await result).code).toBe(status.CANCELLED);
    await until('the unpack to stop and its directory to go', async () => (await inProgress()).length === 0);
    expect((await readdir(snapshots)).filter((e) => !e.startsWith('.'))).toEqual([]);
    expect((await imageCall(d.client, 'ListImages', {})).images).toEqual([]);
    expect(d.logs()).not.toMatch(/unpacking the downloaded blob/);
    // and the image pulls afterwards
    expect((await pull(d, name)).image_ref).toBe(many.config.digest);
  });
});
