// Streaming throughput: bytes per second through skiff's streaming server, next to the same transfer over a
// plain loopback TCP socket (the limit on this machine), in one run.
//   port-forward: a pod's server (busybox nc running `head -c N /dev/zero`) read to EOF through
//                 PortForward + SPDY (our client, as kubectl/crictl speak it);
//   exec stdout:  `head -c N /dev/zero` run with Exec + SPDY, stdout read to the end;
//   loopback:     a Node server writing N zero bytes to a 127.0.0.1 socket, read to EOF by the same kind of
//                 reader (each byte crosses one socket, as in the slowest hop of the others).
// Each figure is the median of RUNS transfers. Needs root (a daemon with runc, conmon, a CNI bridge on
// 10.91.0.0/16). Leaves nothing behind.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm, access } from 'node:fs/promises';
import { openSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { Duplex, Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { sh, quiet, sleep, waitFor, median, unmountBelow } from './lib.mjs';

export const description = 'port-forward and exec stdout bytes/s through the streaming server vs plain loopback TCP (ratio)';

const MiB = 1024 * 1024;
const IMAGE = 'localhost/skiff-bench/busybox:1';
const SUBNET_ALL = '10.91.0.0/16';



/** A Writable that counts bytes and drops them. */
function counter() {
  const w = new Writable({
    write(chunk, _e, cb) {
      w.bytes += chunk.length;
      cb();
    },
  });
  w.bytes = 0;
  return w;
}

async function loopbackOnce(bytes) {
  const chunk = Buffer.alloc(64 * 1024);
  const server = createServer((s) => {
    let left = bytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const t0 = performance.now();
  const got = await new Promise((resolve, reject) => {
    const c = tcpConnect(server.address().port, '127.0.0.1');
    let n = 0;
    c.on('data', (d) => (n += d.length));
    c.on('end', () => resolve(n));
    c.on('error', reject);
  });
  const s = (performance.now() - t0) / 1000;
  server.close();
  if (got !== bytes) throw new Error(`loopback: got ${got} of ${bytes} bytes`);
  return bytes / s;
}

export async function run({ root, args }) {
  const runs = Number(args.find((a) => a.startsWith('--runs='))?.slice(7) ?? 5);
  const size = Number(args.find((a) => a.startsWith('--mib='))?.slice(6) ?? 100) * MiB;
  const { connect, runtimeCall } = await import(pathToFileURL(join(root, 'dist/cli/client.js')).href);
  const { runRemoteCommand, PortForwardSession } = await import(pathToFileURL(join(root, 'dist/stream/client.js')).href);

  const tag = randomBytes(3).toString('hex');
  const dir = await mkdtemp('/tmp/skstr-bench-');
  const guard = `SKSTR-BENCH-${tag}`;
  const bridge = `skstr${tag}`;
  let daemon;
  let client;
  try {
    sh('iptables', ['-w', '5', '-N', guard]);
    sh('iptables', ['-w', '5', '-A', guard, '-s', SUBNET_ALL, '!', '-d', SUBNET_ALL, '-j', 'DROP']);
    sh('iptables', ['-w', '5', '-I', 'FORWARD', '-j', guard]);
    sh('bash', [join(root, 'scripts/busybox-image.sh'), join(dir, 'busybox.tar'), IMAGE]);
    const netd = join(dir, 'net.d');
    await mkdir(netd, { recursive: true });
    const plugins = [{ type: 'bridge', bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', dataDir: join(dir, 'leases'), ranges: [[{ subnet: '10.91.249.0/24' }]] } }];
    await writeFile(join(netd, '10-bench.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: `skstr-bench-${tag}`, plugins }));
    await writeFile(join(dir, 'skiff.toml'), `[cni]\nconf_dir = "${netd}"\n`);
    const sock = join(dir, 's.sock');
    const log = openSync(join(dir, 'skiff.log'), 'w');
    daemon = spawn(process.execPath, [join(root, 'bin/skiff'), 'daemon', '--config', join(dir, 'skiff.toml'), '--root', join(dir, 'root'), '--state', join(dir, 'state'), '--socket', sock, '--log-level', 'warn'], { stdio: ['ignore', log, log] });
    client = connect(sock, 60_000);
    await waitFor('the daemon socket', () => access(sock).then(() => true));
    await waitFor('the daemon', async () => !!(await runtimeCall(client, 'Version', {}, 2000)).runtime_name);
    sh(process.execPath, [join(root, 'bin/skiff'), '-r', sock, 'load', join(dir, 'busybox.tar')]);

    const podConfig = { metadata: { name: 'bench', namespace: 'bench', uid: `bench-${tag}`, attempt: 0 }, linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } };
    const pod = (await runtimeCall(client, 'RunPodSandbox', { config: podConfig })).pod_sandbox_id;
    const ctr = async (name, command) => {
      const config = { metadata: { name, attempt: 0 }, image: { image: IMAGE }, command };
      const id = (await runtimeCall(client, 'CreateContainer', { pod_sandbox_id: pod, config, sandbox_config: podConfig })).container_id;
      await runtimeCall(client, 'StartContainer', { container_id: id });
      return id;
    };
    const sleeper = await ctr('sleeper', ['sleep', '3600']);
    await ctr('source', ['sh', '-c', `printf '#!/bin/sh\\nexec head -c ${size} /dev/zero\\n' >/src.sh && chmod +x /src.sh && exec nc -ll -p 8080 -e /src.sh`]);

    const portForwardOnce = async () => {
      const { url } = await runtimeCall(client, 'PortForward', { pod_sandbox_id: pod, port: [8080] });
      const session = await PortForwardSession.open(url);
      let n = 0;
      const io = new Duplex({
        read() {},
        write(chunk, _e, cb) {
          n += chunk.length;
          cb();
        },
      });
      io.push(null); // nothing to send: the server talks first and closes
      const t0 = performance.now();
      await session.forward(io, 8080);
      const s = (performance.now() - t0) / 1000;
      session.close();
      if (n !== size) throw new Error(`port-forward: got ${n} of ${size} bytes`);
      return size / s;
    };
    const execOnce = async () => {
      const { url } = await runtimeCall(client, 'Exec', { container_id: sleeper, cmd: ['head', '-c', String(size), '/dev/zero'], stdout: true, stderr: true });
      const out = counter();
      const t0 = performance.now();
      const code = await runRemoteCommand(url, { stdout: out, stderr: counter(), tty: false });
      const s = (performance.now() - t0) / 1000;
      if (code !== 0 || out.bytes !== size) throw new Error(`exec: exit ${code}, got ${out.bytes} of ${size} bytes`);
      return size / s;
    };
    // nc may need a moment to listen
    await waitFor('the pod server', async () => (await portForwardOnce()) > 0, 20_000);

    const results = { loopback: [], 'port-forward': [], 'exec stdout': [] };
    for (let i = 0; i < runs; i++) {
      // interleaved, so a noisy neighbour on the machine hits all three alike
      results.loopback.push(await loopbackOnce(size));
      results['port-forward'].push(await portForwardOnce());
      results['exec stdout'].push(await execOnce());
      process.stdout.write(`\rruns: ${i + 1}/${runs}`);
    }
    process.stdout.write('\n');
    const limit = median(results.loopback);
    console.log(`${size / MiB} MiB per transfer, median of ${runs}; SPDY/3.1 through the streaming server, runc, busybox:`);
    console.log(`${''.padEnd(28)}${'MiB/s'.padStart(10)}${'vs loopback'.padStart(14)}`);
    for (const [name, xs] of Object.entries(results)) {
      const m = median(xs);
      console.log(`${name.padEnd(28)}${(m / MiB).toFixed(0).padStart(10)}${(m / limit).toFixed(2).padStart(14)}`);
    }
  } finally {
    if (client) {
      const pods = await runtimeCall(client, 'ListPodSandbox', {}, 10_000).catch(() => ({ items: [] }));
      for (const p of pods.items) {
        await runtimeCall(client, 'StopPodSandbox', { pod_sandbox_id: p.id }, 30_000).catch(() => undefined);
        await runtimeCall(client, 'RemovePodSandbox', { pod_sandbox_id: p.id }, 30_000).catch(() => undefined);
      }
      client.close();
    }
    if (daemon && daemon.exitCode === null) {
      const gone = new Promise((r) => daemon.once('exit', r));
      daemon.kill('SIGTERM');
      if ((await Promise.race([gone.then(() => true), sleep(15_000).then(() => false)])) === false) daemon.kill('SIGKILL');
    }
    await unmountBelow(dir);
    quiet('ip', ['link', 'del', bridge]);
    while (quiet('iptables', ['-w', '5', '-D', 'FORWARD', '-j', guard])) {
      // every jump
    }
    quiet('iptables', ['-w', '5', '-F', guard]);
    quiet('iptables', ['-w', '5', '-X', guard]);
    if (process.env.SKIFF_BENCH_KEEP) console.log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true }).catch((err) => console.error(`cleanup: ${err.message}`));
  }
}
