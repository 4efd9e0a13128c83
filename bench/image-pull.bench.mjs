// Image pull benchmark (issue 3): pull + unpack of a large, realistic image (a Debian bookworm minbase
// rootfs made by debootstrap: ~200 MB, ~7k files, in 3 gzip layers) from a local docker-registry on
// 127.0.0.1, by skiff and by containerd's CRI plugin side by side in one run, both driven by skiff's own
// CRI client (dist/cli/client.js) over gRPC. Prints per-round times, the median ratio skiff/containerd
// (target <= 1.0), skiff's peak daemon RSS during the pull (target < 150 MB), and the slowest answer to a
// Version call made every 20 ms during each pull (a daemon busy unpacking must keep answering kubelet).
// Each runtime keeps its root on a fresh journaled ext4 of its own (see freshFs).
//
//   npm run bench -- image-pull [--rounds=N]
//
// Needs root. Installs the Debian packages it needs (containerd, debootstrap, docker-registry) when missing.
// Work files live in $SKIFF_BENCH_DIR (default /var/tmp/skiff-bench-images); the rootfs and the image
// blobs are built once and reused by later runs.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile, rm, readFile, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { sleep, waitFor, median, unmountBelow, skiffCommand } from './lib.mjs';

const REPO = resolve(import.meta.dirname, '..');
const DIR = process.env.SKIFF_BENCH_DIR ?? '/var/tmp/skiff-bench-images';
let ROUNDS = 3;
const MIRROR = 'http://deb.debian.org/debian';

const log = (...a) => console.log('[image-pull]', ...a);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout || '').slice(0, 2000)}`);
  return r.stdout;
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function ensurePackages() {
  const want = [
    ['containerd', 'containerd'],
    ['debootstrap', 'debootstrap'],
    ['docker-registry', 'docker-registry'],
  ].filter(([cmd]) => !have(cmd));
  if (want.length === 0) return;
  log(`installing ${want.map((w) => w[1]).join(' ')}`);
  sh('apt-get', ['update', '-qq']);
  sh('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...want.map((w) => w[1])], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

/** The apt mirror this machine is configured with (debootstrap works through it where the internet may not). */
function aptMirror() {
  const files = ['/etc/apt/sources.list', ...(existsSync('/etc/apt/sources.list.d') ? sh('ls', ['/etc/apt/sources.list.d']).split('\n').filter(Boolean).map((f) => `/etc/apt/sources.list.d/${f}`) : [])];
  for (const f of files) {
    let text;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const deb = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text);
    if (deb && /debian\/?$/.test(deb[1])) return deb[1];
    for (const stanza of text.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      if (uri && /^Suites:.*\bbookworm\b/m.test(stanza) && /debian\/?$/.test(uri)) return uri;
    }
  }
  return MIRROR;
}

async function ensureRootfs() {
  const rootfs = join(DIR, 'rootfs');
  if (existsSync(join(rootfs, '.complete'))) return rootfs;
  await rm(rootfs, { recursive: true, force: true });
  const mirror = aptMirror();
  log(`debootstrap --variant=minbase bookworm from ${mirror} (once)`);
  sh('debootstrap', ['--variant=minbase', 'bookworm', rootfs, mirror]);
  await writeFile(join(rootfs, '.complete'), '');
  return rootfs;
}

/** Streams `tar` of some top-level entries through sha256 (diff_id) and gzip -6 into a blob file. */
async function buildLayer(rootfs, entries, out) {
  const tar = spawn('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--exclude=./.complete', '-C', rootfs, '-cf', '-', ...entries], { stdio: ['ignore', 'pipe', 'inherit'] });
  const diff = createHash('sha256');
  const comp = createHash('sha256');
  let size = 0;
  const tapDiff = new Transform({ transform(c, _e, cb) { diff.update(c); cb(null, c); } });
  const tapComp = new Transform({ transform(c, _e, cb) { comp.update(c); size += c.length; cb(null, c); } });
  const exited = new Promise((res, rej) => tar.on('exit', (code) => (code === 0 ? res() : rej(new Error(`tar exit ${code}`)))));
  await pipeline(tar.stdout, tapDiff, createGzip({ level: 6 }), tapComp, createWriteStream(out));
  await exited;
  return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${comp.digest('hex')}`, size, diffId: `sha256:${diff.digest('hex')}`, file: out };
}

async function ensureImage(rootfs) {
  const dir = join(DIR, 'image');
  const metaFile = join(dir, 'image.json');
  if (existsSync(metaFile)) return JSON.parse(await readFile(metaFile, 'utf8'));
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  log('building image layers (once)');
  const top = sh('ls', ['-A', rootfs]).split('\n').filter((n) => n && n !== '.complete');
  // three layers as a Dockerfile build would make them: the big /usr, /var (apt lists and caches), the rest
  const groups = [['./usr'], ['./var'], top.filter((n) => n !== 'usr' && n !== 'var').map((n) => `./${n}`)];
  const layers = [];
  for (const [i, g] of groups.entries()) layers.push(await buildLayer(rootfs, g, join(dir, `layer${i}.tar.gz`)));
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['bash'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'skiff bench' })),
    }),
  );
  const configDesc = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${createHash('sha256').update(config).digest('hex')}`, size: config.length };
  await writeFile(join(dir, 'config.json'), config);
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })) });
  const meta = { layers, config: { ...configDesc, file: join(dir, 'config.json') }, manifest };
  await writeFile(metaFile, JSON.stringify(meta));
  return meta;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}


const children = [];
function start(cmd, args, logFile) {
  const out = createWriteStream(logFile);
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout.pipe(out);
  p.stderr.pipe(out);
  children.push(p);
  return p;
}

async function stopAll() {
  for (const p of children.reverse()) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([gone, sleep(10_000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

async function startRegistry(img) {
  const dir = join(DIR, 'registry');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  await writeFile(join(dir, 'config.yml'), `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  start('docker-registry', ['serve', join(dir, 'config.yml')], join(dir, 'registry.log'));
  const host = `127.0.0.1:${port}`;
  await waitFor('docker-registry', async () => (await fetch(`http://${host}/v2/`)).ok);
  const repo = 'bench/debian';
  for (const b of [img.config, ...img.layers]) {
    const started = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    await started.arrayBuffer();
    const loc = new URL(started.headers.get('location'), `http://${host}`);
    loc.searchParams.set('digest', b.digest);
    const put = await fetch(loc, { method: 'PUT', body: await readFile(b.file), headers: { 'content-type': 'application/octet-stream' } });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`upload ${b.digest}: HTTP ${put.status}`);
  }
  const m = await fetch(`http://${host}/v2/${repo}/manifests/bookworm`, { method: 'PUT', body: img.manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (m.status !== 201) throw new Error(`manifest push: HTTP ${m.status} ${await m.text()}`);
  return { host, image: `${host}/${repo}:bookworm` };
}

/**
 * Gives a runtime a fresh, journaled ext4 file system of its own (a loop-mounted sparse image) at `dir`.
 * Why: on ext4 without a journal (this VM's root) the inode allocator steps over every inode deleted in the
 * last ~30 s ("recently_deleted"), so a pull right after removing the previous round's image paid for that
 * removal: whoever freed inodes last ran up to 4x slower, a property of the disk and not of the runtime.
 * A journaled ext4 (a node's usual root) has no such penalty, and each runtime starts from the same state.
 */
async function freshFs(dir) {
  await removeDir(dir);
  await mkdir(dir, { recursive: true });
  const img = `${dir}.ext4`;
  await rm(img, { force: true });
  sh('truncate', ['-s', '8G', img]);
  sh('mkfs.ext4', ['-q', '-F', img]);
  sh('mount', ['-o', 'loop', img, dir]);
}

/** Removes a runtime's dir after unmounting what it left mounted there (its pod dir, snapshots, its fs). */
async function removeDir(dir) {
  await unmountBelow(dir);
  await rm(dir, { recursive: true, force: true });
  await rm(`${dir}.ext4`, { force: true });
}

async function startSkiff() {
  const dir = join(DIR, 'skiff');
  await freshFs(dir);
  await writeFile(join(dir, 'config.toml'), '');
  const socket = join(dir, 'skiff.sock');
  // with the node flags of bin/skiff's shebang (the daemon's heap settings), as a node's service runs it
  const skiff = skiffCommand(REPO);
  const p = start(skiff.cmd, [...skiff.args, 'daemon', '--config', join(dir, 'config.toml'), '--root', join(dir, 'root'), '--state', join(dir, 'state'), '--socket', socket, '--log-level', 'warn'], join(dir, 'daemon.log'));
  await waitFor('skiff daemon', async () => (await stat(socket)).isSocket());
  return { name: 'skiff', pid: p.pid, socket, root: join(dir, 'root') };
}

async function startContainerd(registryHost) {
  const dir = join(DIR, 'containerd');
  await freshFs(dir);
  const certs = join(dir, 'certs.d', registryHost);
  await mkdir(certs, { recursive: true });
  await mkdir(join(dir, 'cni'), { recursive: true });
  await writeFile(join(certs, 'hosts.toml'), `server = "http://${registryHost}"\n[host."http://${registryHost}"]\n  capabilities = ["pull", "resolve"]\n`);
  const socket = join(dir, 'containerd.sock');
  await writeFile(
    join(dir, 'config.toml'),
    `version = 2
root = "${join(dir, 'root')}"
state = "${join(dir, 'state')}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${join(dir, 'opt')}"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "${registryHost}/bench/debian:bookworm"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${join(dir, 'cni')}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "${join(dir, 'certs.d')}"
`,
  );
  const p = start('containerd', ['--config', join(dir, 'config.toml'), '--log-level', 'warn'], join(dir, 'containerd.log'));
  await waitFor('containerd', async () => (await stat(socket)).isSocket());
  return { name: 'containerd', pid: p.pid, socket, root: join(dir, 'root') };
}

function procStatus(pid, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;

/**
 * Calls Version over and over (20 ms apart) until stopped, keeping the slowest answer: how long a pull
 * makes kubelet's other calls wait (a daemon busy unpacking must still answer PLEG and status calls).
 */
function probeLatency(client, runtimeCall) {
  let worst = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t0 = performance.now();
      await runtimeCall(client, 'Version', {}, 10_000);
      worst = Math.max(worst, performance.now() - t0);
      await sleep(20);
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    return worst;
  };
}

async function pullOnce(client, rt, image) {
  const { imageCall, runtimeCall } = await import(join(REPO, 'dist/cli/client.js'));
  // start clean: nothing of the image cached, dirty pages of the last round written out
  const before = await imageCall(client, 'ImageStatus', { image: { image } });
  if (before.image) await imageCall(client, 'RemoveImage', { image: { image } });
  sh('sync', []);
  resetPeak(rt.pid);
  let peak = 0;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, procStatus(rt.pid, 'VmRSS'));
    } catch {
      // process gone: the pull fails below
    }
  }, 25);
  const cpu0 = cpuSeconds(rt.pid);
  const sys0 = sysSeconds(rt.pid);
  const stopProbe = probeLatency(client, runtimeCall);
  let res, ms, lag;
  try {
    const t0 = performance.now();
    res = await imageCall(client, 'PullImage', { image: { image } }, 0);
    ms = performance.now() - t0;
  } finally {
    // also when the pull failed: no probe or sampler left running behind the error
    lag = await stopProbe().catch(() => NaN);
    clearInterval(sampler);
  }
  const cpu = cpuSeconds(rt.pid) - cpu0;
  const sys = sysSeconds(rt.pid) - sys0;
  peak = Math.max(peak, procStatus(rt.pid, 'VmHWM'));
  if (!res.image_ref) throw new Error(`${rt.name}: PullImage returned no image_ref`);
  return { ms, peak, cpu, sys, lag };
}

/** system CPU seconds (kernel work: file creation, page cache) of a process and its reaped children. */
function sysSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[12]) + Number(f[14])) / 100;
}

/** user+system CPU seconds of a process and its reaped children (zstd, sh, unpigz). */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // fields 14-17 of stat (utime stime cutime cstime), counted from "state" as index 0 here
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
}

/** Resets the process's peak RSS (VmHWM) so it measures this pull only. */
function resetPeak(pid) {
  // best effort; the sampler still sees the peak
  spawnSync('sh', ['-c', `echo 5 > /proc/${pid}/clear_refs`]);
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('the image pull bench needs root');
  if (!existsSync(join(REPO, 'dist/cli/client.js'))) throw new Error('run `npm run build` first');
  await mkdir(DIR, { recursive: true });
  ensurePackages();
  const rootfs = await ensureRootfs();
  const img = await ensureImage(rootfs);
  const files = Number(sh('sh', ['-c', `find ${rootfs} | wc -l`]).trim());
  const unpacked = Number(sh('du', ['-sb', '--exclude=.complete', rootfs]).split(/\s/)[0]);
  const compressed = img.layers.reduce((a, l) => a + l.size, 0);
  log(`image: ${img.layers.length} gzip layers, ${mb(compressed)} compressed, ${mb(unpacked)} unpacked, ${files} files`);
  const reg = await startRegistry(img);
  const { connect } = await import(join(REPO, 'dist/cli/client.js'));
  const runtimes = [];
  const clients = new Map();
  const results = new Map();
  try {
    // started inside the try: a daemon that fails to start still gets its mounts and file system removed
    runtimes.push(await startSkiff(), await startContainerd(reg.host));
    for (const rt of runtimes) {
      clients.set(rt.name, connect(rt.socket, 60_000));
      results.set(rt.name, []);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // alternate who goes first so neither always pulls on a machine the other just loaded
      const order = round % 2 ? [...runtimes].reverse() : runtimes;
      for (const rt of order) {
        const r = await pullOnce(clients.get(rt.name), rt, reg.image);
        results.get(rt.name).push(r);
        log(`round ${round + 1} ${rt.name.padEnd(10)} ${(r.ms / 1000).toFixed(2)} s  daemon CPU ${r.cpu.toFixed(2)} s (sys ${r.sys.toFixed(2)})  peak daemon RSS ${mb(r.peak)}  slowest Version rpc ${r.lag.toFixed(0)} ms`);
      }
    }
  } finally {
    for (const c of clients.values()) c.close();
    await stopAll();
    // the daemons leave mounts (skiff's pod dir, containerd's snapshots): keep the rootfs and image cache only
    for (const name of ['skiff', 'containerd']) await removeDir(join(DIR, name));
  }
  const s = results.get('skiff');
  const c = results.get('containerd');
  const ratio = median(s.map((r) => r.ms)) / median(c.map((r) => r.ms));
  const skiffPeak = Math.max(...s.map((r) => r.peak));
  console.log('');
  console.log(`image pull (${mb(compressed)} gzip -> ${mb(unpacked)}, ${files} files), median of ${ROUNDS}:`);
  console.log(`  skiff       ${(median(s.map((r) => r.ms)) / 1000).toFixed(2)} s   daemon CPU ${median(s.map((r) => r.cpu)).toFixed(2)} s   peak daemon RSS ${mb(skiffPeak)} (target < 150 MB)`);
  console.log(`  containerd  ${(median(c.map((r) => r.ms)) / 1000).toFixed(2)} s   daemon CPU ${median(c.map((r) => r.cpu)).toFixed(2)} s   peak daemon RSS ${mb(Math.max(...c.map((r) => r.peak)))}`);
  console.log(`  slowest Version rpc during a pull: skiff ${Math.max(...s.map((r) => r.lag)).toFixed(0)} ms, containerd ${Math.max(...c.map((r) => r.lag)).toFixed(0)} ms`);
  console.log(`  ratio skiff/containerd ${ratio.toFixed(2)} (target <= 1.0)`);
  return { ratio, skiffPeak };
}

export const description = 'pull + unpack of a ~200 MB debootstrap image from a local registry: skiff vs containerd, and peak RSS';

export async function run({ args }) {
  const rounds = args.find((a) => a.startsWith('--rounds='));
  if (rounds) ROUNDS = Number(rounds.slice('--rounds='.length));
  try {
    const { ratio, skiffPeak } = await main();
    if (ratio > 1.0 || skiffPeak >= 150e6) console.log('[image-pull] missed its target (ratio <= 1.0, RSS < 150 MB)');
  } catch (err) {
    await stopAll();
    throw err;
  }
}
