// A real `docker-registry` (CNCF distribution) on 127.0.0.1 with a random port, optionally behind
// htpasswd Basic auth, or behind a small Bearer-token front (token server + auth-checking proxy, both real
// HTTP servers in this process). Plus: pushing built images to it, and `pushBusybox`/`loadBusybox`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { busyboxImage, writeBusyboxArchive, type Blob, type BuiltImage } from './images.js';
import { runCli } from './daemon.js';

export interface TestRegistry {
  /** host:port clients pull from. */
  host: string;
  /** host:port of the registry itself (pushes go here, bypassing the bearer front). */
  backend: string;
  auth: 'none' | 'basic' | 'bearer';
  username: string;
  password: string;
  /** Number of token requests the bearer token server answered. */
  tokenRequests: () => number;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = netServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

function listen(server: Server): Promise<number> {
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res((server.address() as { port: number }).port)));
}

async function waitHttp(url: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url} did not come up`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export async function startRegistry(opts: { auth?: 'none' | 'basic' | 'bearer' } = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? 'none';
  const dir = await mkdtemp(join(tmpdir(), 'skiff-reg-'));
  const port = await freePort();
  const username = 'tester';
  const password = randomBytes(8).toString('hex');
  let authYaml = '';
  if (auth === 'basic') {
    const r = spawnSync('htpasswd', ['-Bbn', username, password], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`htpasswd failed: ${r.stderr}`);
    await writeFile(join(dir, 'htpasswd'), r.stdout);
    authYaml = `auth:\n  htpasswd:\n    realm: skiff-test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  await writeFile(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${authYaml}`,
  );
  const proc: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'ignore'] });
  const backend = `127.0.0.1:${port}`;
  await waitHttp(`http://${backend}/v2/`);
  let front: Server | undefined;
  let tokenServer: Server | undefined;
  let tokens = 0;
  let host = backend;
  if (auth === 'bearer') {
    const issued = new Set<string>();
    tokenServer = createServer((req, res) => {
      tokens++;
      const hdr = req.headers.authorization ?? '';
      if (hdr !== `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`) {
        res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      const t = randomBytes(12).toString('hex');
      issued.add(t);
      // alternate the two spellings registries use
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(tokens % 2 ? { token: t, expires_in: 300 } : { access_token: t, expires_in: 300 }));
    });
    const tport = await listen(tokenServer);
    front = createServer((req: IncomingMessage, res: ServerResponse) => {
      const t = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (!issued.has(t)) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${tport}/token",service="skiff-test",scope="repository:x:pull"` }).end();
        return;
      }
      const up = httpRequest({ host: '127.0.0.1', port, path: req.url, method: req.method, headers: { ...req.headers, authorization: '' } }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    host = `127.0.0.1:${await listen(front)}`;
  }
  return {
    host,
    backend,
    auth,
    username,
    password,
    tokenRequests: () => tokens,
    async stop() {
      proc.kill('SIGTERM');
      front?.close();
      tokenServer?.close();
      front?.closeAllConnections();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function authHeader(reg: TestRegistry): Record<string, string> {
  return reg.auth === 'basic' ? { authorization: `Basic ${Buffer.from(`${reg.username}:${reg.password}`).toString('base64')}` } : {};
}

export async function pushBlob(reg: TestRegistry, repo: string, b: Blob): Promise<void> {
  const base = `http://${reg.backend}/v2/${repo}`;
  const head = await fetch(`${base}/blobs/${b.digest}`, { method: 'HEAD', headers: authHeader(reg) });
  if (head.status === 200) return;
  const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST', headers: authHeader(reg) });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, `http://${reg.backend}`);
  loc.searchParams.set('digest', b.digest);
  const put = await fetch(loc, { method: 'PUT', body: b.data, headers: { ...authHeader(reg), 'content-type': 'application/octet-stream' } });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`blob upload ${b.digest}: HTTP ${put.status}`);
}

export async function pushManifest(reg: TestRegistry, repo: string, ref: string, m: Blob): Promise<void> {
  const r = await fetch(`http://${reg.backend}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: m.data, headers: { ...authHeader(reg), 'content-type': m.mediaType } });
  const text = await r.text();
  if (r.status !== 201) throw new Error(`manifest push ${repo}:${ref}: HTTP ${r.status} ${text}`);
}

/** Pushes an image's blobs and manifest; returns "host/repo:tag" (the pull name). */
export async function pushImage(reg: TestRegistry, repo: string, tag: string, img: BuiltImage): Promise<string> {
  for (const b of [img.config, ...img.layers]) await pushBlob(reg, repo, b);
  await pushManifest(reg, repo, tag, img.manifest);
  return `${reg.host}/${repo}:${tag}`;
}

/** Pushes the busybox test image; returns its pull name. */
export async function pushBusybox(reg: TestRegistry, repo = 'library/busybox', tag = 'latest'): Promise<string> {
  return pushImage(reg, repo, tag, await busyboxImage());
}

/**
 * Gets busybox into a running daemon without a registry, the way a user would: `skiff load` of an OCI
 * archive. Returns the image name it is recorded under.
 */
export async function loadBusybox(daemon: { socket: string }, name = 'docker.io/library/busybox:latest', handler?: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-bb-'));
  try {
    const file = join(dir, 'busybox.tar');
    await writeBusyboxArchive(file, name);
    const r = await runCli(['-r', daemon.socket, 'load', file, ...(handler ? ['--runtime-handler', handler] : [])]);
    if (r.code !== 0) throw new Error(`skiff load failed: ${r.stderr}`);
    return name;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
