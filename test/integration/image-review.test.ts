// Faults a review of src/image/ found, each pinned by a test against a real daemon and real HTTP registries
// (scripted servers on 127.0.0.1): pull-source honoured from pod annotations, credentials sent to mirrors,
// GC racing an in-flight pull, unbounded error bodies, and the codes of a registry's own faults.
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { daemonsPerTest, runCli, makeScratchDir, type TestDaemon } from '../helpers/daemon.js';
import { image, layer, ociArchive, type BuiltImage, type Blob } from '../helpers/images.js';
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

function errOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: -1, details: 'succeeded' }),
    (e: { code: number; details: string }) => e,
  );
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A scripted HTTP server on 127.0.0.1; `log` records "METHOD path authorization" of every request. */
async function server(route: Handler): Promise<{ host: string; log: string[] }> {
  const log: string[] = [];
  const s = createServer((req, res) => {
    log.push(`${req.method} ${req.url} ${req.headers.authorization ?? '-'}`);
    route(req, res);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return { host: `127.0.0.1:${(s.address() as { port: number }).port}`, log };
}

/** Serves `img` as any repository (tag "v1" or its digest); `blob` may take over a blob's answer. */
function registryRoute(img: BuiltImage, blob?: (b: Blob, req: IncomingMessage, res: ServerResponse) => void): Handler {
  const blobs = new Map([img.config, ...img.layers].map((b) => [b.digest, b]));
  return (req, res) => {
    const m = /^\/v2\/.+\/(manifests|blobs)\/([^/?]+)$/.exec(req.url ?? '');
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    if (m?.[1] === 'manifests' && (m[2] === 'v1' || m[2] === 'latest' || m[2] === img.manifest.digest)) {
      return void res.writeHead(200, { 'content-type': img.manifest.mediaType, 'content-length': img.manifest.size }).end(img.manifest.data);
    }
    const b = m?.[1] === 'blobs' ? blobs.get(m[2]) : undefined;
    if (!b) return void res.writeHead(404).end();
    if (blob) return blob(b, req, res);
    res.writeHead(200, { 'content-length': b.size }).end(b.data);
  };
}

const pull = (d: TestDaemon, name: string, extra: { auth?: AuthConfig | null; annotations?: Record<string, string> } = {}) =>
  imageCall(d.client, 'PullImage', { image: { image: name, annotations: extra.annotations ?? {} }, auth: extra.auth ?? null });

let victim: BuiltImage;
let attacker: BuiltImage;
beforeAll(async () => {
  victim = image([await layer([{ name: 'who', content: 'the real image' }])]);
  attacker = image([await layer([{ name: 'who', content: 'the attacker' }])]);
});

describe('pull-source (skiff load)', () => {
  it('a pod-style pull-source annotation is ignored: the named registry is used, the source never contacted', async () => {
    const real = await server(registryRoute(victim));
    const evil = await server(registryRoute(attacker));
    const d = await daemon();
    const src = `${evil.host}/archive@${attacker.manifest.digest}`;
    // kubelet copies every pod annotation into ImageSpec.annotations
    const r = await pull(d, `${real.host}/team/app:v1`, { annotations: { 'skiff.io/pull-source': src } });
    expect(r.image_ref).toBe(victim.config.digest);
    // a guessed key does not help either
    const r2 = await pull(d, `${real.host}/team/app2:v1`, { annotations: { 'skiff.io/pull-source': src, 'skiff.io/pull-source-key': 'guess' } });
    expect(r2.image_ref).toBe(victim.config.digest);
    expect(evil.log).toEqual([]);
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: `${real.host}/team/app:v1` } });
    expect(st.image!.id).toBe(victim.config.digest);
  });

  it('skiff load still works end to end, and the load key is a root-only file', async () => {
    const d = await daemon();
    const dir = await makeScratchDir();
    await writeFile(join(dir, 'o.tar'), await ociArchive(attacker, 'example.com/mine/app:v3'));
    const r = await runCli(['-r', d.socket, 'load', join(dir, 'o.tar')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const st = await imageCall(d.client, 'ImageStatus', { image: { image: 'example.com/mine/app:v3' } });
    expect(st.image!.id).toBe(attacker.config.digest);
    const key = await stat(`${d.socket}.load-key`);
    expect(key.mode & 0o777).toBe(0o600);
    expect(key.uid).toBe(0);
  });
});

describe('credentials go only to the registry they are for', () => {
  const user = 'alice';
  const pass = 'upstream-secret';
  const basic = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

  /** An upstream behind Basic auth, a Basic-auth mirror and a Bearer mirror with its own token realm, all logging. */
  async function setup() {
    const serve = registryRoute(victim);
    const upstream = await server((req, res) => {
      if (req.headers.authorization !== basic) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="up"' }).end();
      serve(req, res);
    });
    const realm = await server((_req, res) => void res.writeHead(401).end('{}'));
    const basicMirror = await server((_req, res) => void res.writeHead(401, { 'www-authenticate': 'Basic realm="mirror"' }).end());
    const bearerMirror = await server((_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="m"` }).end());
    const d = await daemon({ config: `[registry.mirrors]\n"${upstream.host}" = ["http://${basicMirror.host}", "http://${bearerMirror.host}"]\n` });
    return { upstream, realm, basicMirror, bearerMirror, d, name: `${upstream.host}/team/app:v1` };
  }
  const sawAuth = (log: string[]) => log.filter((l) => !l.endsWith(' -'));

  it('server_address names the upstream (any spelling): mirrors and their token realm never see the credentials', async () => {
    const t = await setup();
    const r = await pull(t.d, t.name, { auth: { username: user, password: pass, server_address: `http://${t.upstream.host}/v2/` } });
    expect(r.image_ref).toBe(victim.config.digest);
    expect(t.basicMirror.log.length).toBeGreaterThan(0);
    expect(t.bearerMirror.log.length).toBeGreaterThan(0);
    expect(sawAuth(t.basicMirror.log)).toEqual([]);
    expect(sawAuth(t.bearerMirror.log)).toEqual([]);
    expect(sawAuth(t.realm.log)).toEqual([]);
  });

  it('no server_address: only the reference\'s own registry gets them', async () => {
    const t = await setup();
    const r = await pull(t.d, t.name, { auth: { username: user, password: pass } });
    expect(r.image_ref).toBe(victim.config.digest);
    expect(sawAuth([...t.basicMirror.log, ...t.bearerMirror.log, ...t.realm.log])).toEqual([]);
  });

  it('server_address naming another registry: nobody gets them', async () => {
    const t = await setup();
    const e = await errOf(pull(t.d, t.name, { auth: { username: user, password: pass, server_address: 'https://elsewhere.example' } }));
    expect(e.code).toBe(status.PERMISSION_DENIED);
    expect(sawAuth([...t.upstream.log, ...t.basicMirror.log, ...t.bearerMirror.log, ...t.realm.log])).toEqual([]);
  });
});

describe('image GC and pulls in flight', () => {
  it('RemoveImage during a pull keeps the snapshots and blobs the pull has or skipped because they existed', async () => {
    const shared = await layer([{ name: 'shared', content: 'base' }]);
    const base = image([shared]);
    const own = await layer([{ name: 'own', content: 'fast' }]);
    const slow = await layer([{ name: 'slow', content: 'late' }]);
    const app = image([shared, own, slow]);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const appRoute = registryRoute(app, (b, _req, res) => {
      if (b.digest !== slow.digest) return void res.writeHead(200, { 'content-length': b.size }).end(b.data);
      res.writeHead(200, { 'content-length': b.size });
      res.write(b.data.subarray(0, 10));
      void released.then(() => res.end(b.data.subarray(10)));
    });
    const baseRoute = registryRoute(base);
    const s = await server((req, res) => (req.url?.startsWith('/v2/base/') ? baseRoute(req, res) : appRoute(req, res)));
    const d = await daemon();
    expect((await pull(d, `${s.host}/base/img:v1`)).image_ref).toBe(base.config.digest);
    const pulling = pull(d, `${s.host}/app/img:v1`);
    // wait until the pull skipped the shared layer, unpacked its own and hangs on the slow one
    for (let i = 0; i < 100 && !s.log.some((l) => l.includes(slow.digest)); i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 500));
    // removing the only image that records the shared layer runs GC while the pull is still going
    await imageCall(d.client, 'RemoveImage', { image: { image: base.config.digest } });
    release();
    expect((await pulling).image_ref).toBe(app.config.digest);
    const snaps = await readdir(join(d.root, 'images/runc/snapshots'), { recursive: true });
    expect(snaps.filter((f) => /^\d+\/fs\/(shared|own|slow)$/.test(f)).map((f) => f.split('/')[2]).sort()).toEqual(['own', 'shared', 'slow']);
    const blobs = await readdir(join(d.root, 'images/runc/blobs/sha256'));
    for (const b of [app.config, app.manifest, shared, own, slow]) expect(blobs).toContain(b.digest.slice(7));
  });
});

describe('bounded response bodies', () => {
  const FLOOD = 200 * 1024 * 1024;
  /** Streams `FLOOD` bytes as fast as the client reads them; returns how many went out before it hung up. */
  function flood(res: ServerResponse, code: number, headers: Record<string, string> = {}): () => number {
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    let sent = 0;
    res.writeHead(code, headers);
    const pump = () => {
      while (sent < FLOOD && !res.destroyed) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
    return () => sent;
  }
  async function peakRss(pid: number): Promise<number> {
    const { readFile } = await import('node:fs/promises');
    const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return Number(m![1]) * 1024;
  }

  it('a registry streaming a huge error body: the daemon reads a bounded part and fails the pull clearly', async () => {
    let sent = () => 0;
    const s = await server((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end('{}');
      sent = flood(res, 400, { 'content-type': 'text/plain' });
    });
    const d = await daemon();
    const before = await peakRss(d.proc.pid!);
    const e = await errOf(pull(d, `${s.host}/x/y:v1`));
    expect(e.details).toMatch(/HTTP 400/);
    expect(e.details.length).toBeLessThan(2000);
    expect(sent()).toBeLessThan(32 * 1024 * 1024);
    expect((await peakRss(d.proc.pid!)) - before).toBeLessThan(64 * 1024 * 1024);
  });

  it('a token server streaming a huge answer: refused after 1 MiB', async () => {
    let sent = () => 0;
    const s = await server((req, res) => {
      if (req.url?.startsWith('/token')) return void (sent = flood(res, 200, { 'content-type': 'application/json' }));
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="x"` }).end();
    });
    const d = await daemon();
    const before = await peakRss(d.proc.pid!);
    const e = await errOf(pull(d, `${s.host}/x/y:v1`));
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.details).toMatch(/token server/);
    expect(sent()).toBeLessThan(32 * 1024 * 1024);
    expect((await peakRss(d.proc.pid!)) - before).toBeLessThan(64 * 1024 * 1024);
  });
});

describe("a registry's own faults are UNAVAILABLE, the user's are INVALID_ARGUMENT", () => {
  it('a manifest that does not match the digest asked for, and an unexpected HTTP status', async () => {
    const s = await server((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end('{}');
      // whatever is asked for, the victim's manifest: wrong for any other digest
      if (req.url?.startsWith('/v2/wrong/')) return void res.writeHead(200, { 'content-type': victim.manifest.mediaType }).end(victim.manifest.data);
      res.writeHead(418).end('teapot');
    });
    const d = await daemon();
    const e1 = await errOf(pull(d, `${s.host}/wrong/img@${attacker.manifest.digest}`));
    expect(e1.details).toMatch(/manifest with digest/);
    expect(e1.code).toBe(status.UNAVAILABLE);
    const e2 = await errOf(pull(d, `${s.host}/other/img:v1`));
    expect(e2.details).toMatch(/HTTP 418/);
    expect(e2.code).toBe(status.UNAVAILABLE);
    for (const bad of ['UPPER/case:v1', `${s.host}/x@sha256:123`, 'a b']) expect((await errOf(pull(d, bad))).code).toBe(status.INVALID_ARGUMENT);
  });
});
