// Pod start latency and memory, skiff next to containerd's CRI plugin in one run, both driven over gRPC by
// skiff's own CRI client (dist/cli/client.js) with the same pod and container configs, the same image
// (made from the host's busybox by scripts/busybox-image.sh), and the same CNI bridge setup.
//   time: RunPodSandbox -> CreateContainer -> StartContainer -> ContainerStatus says RUNNING, for N
//         sequential pods (one warm-up pod each first); the two runtimes alternate pod by pod so a noisy
//         neighbour on the machine hits both alike.
//   memory: with N pods running on each, the daemon's RSS, and per pod the processes the runtime keeps
//         beside the workload (skiff: conmon; containerd: its shim and the pause process).
// Needs root. Installs Debian's containerd if it is missing. Leaves nothing behind (scratch dirs, bridges,
// iptables chain, mounts, processes).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, readFile, readdir, rm, rmdir, access } from 'node:fs/promises';
import { openSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sh, quiet, sleep, waitFor, median, unmountBelow, skiffCommand } from './lib.mjs';

export const description = 'RunPodSandbox -> container Running (median of N sequential pods) and memory with N pods: skiff vs containerd';

const BUSYBOX = 'localhost/skiff-bench/busybox:1';
const PAUSE = 'localhost/skiff-bench/pause:1';
const SUBNET_ALL = '10.94.0.0/16';


function ensureContainerd() {
  if (quiet('sh', ['-c', 'command -v containerd && command -v ctr && command -v containerd-shim-runc-v2'])) return;
  console.log('installing containerd (Debian package) for the comparison ...');
  sh('apt-get', ['update', '-qq']);
  sh('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'containerd'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

async function conflist(dir, name, bridge, subnet, leases) {
  await mkdir(dir, { recursive: true });
  const plugins = [{ type: 'bridge', bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', dataDir: leases, ranges: [[{ subnet }]] } }];
  await writeFile(join(dir, '10-bench.conflist'), JSON.stringify({ cniVersion: '1.0.0', name, plugins }));
}


/** Every process as { pid, ppid, argv, comm }. */
async function processes() {
  const out = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = (await readFile(`/proc/${d}/cmdline`, 'utf8')).split('\0').filter(Boolean);
      const stat = await readFile(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      out.push({ pid: Number(d), ppid, argv, comm });
    } catch {
      // gone
    }
  }
  return out;
}

/** RSS and PSS in bytes (PSS shares pages of the same binary fairly between its copies). */
async function memory(pid) {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
  return { rss: kb('Rss'), pss: kb('Pss') };
}

async function sumMemory(pids) {
  let rss = 0;
  let pss = 0;
  for (const p of pids) {
    const m = await memory(p).catch(() => ({ rss: 0, pss: 0 }));
    rss += m.rss;
    pss += m.pss;
  }
  return { rss, pss };
}

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const mb = (b) => (b / 1048576).toFixed(1);

export async function run({ root, args }) {
  if (process.getuid?.() !== 0) throw new Error('run as root (pods need namespaces, mounts, cgroups)');
  const n = Number(args.find((a) => a.startsWith('--pods='))?.slice(7) ?? 20);
  const { connect, runtimeCall } = await import(`${root}/dist/cli/client.js`);
  ensureContainerd();

  // containerd's shims keep runc state and sockets under /run/containerd whatever its config says
  const hadRunContainerd = await access('/run/containerd').then(() => true, () => false);
  const tag = randomBytes(3).toString('hex');
  const dir = await mkdtemp('/tmp/skbench-');
  const guard = `SKDEMO-BENCH-${tag}`;
  const bridges = [`skdemo${tag}s`, `skdemo${tag}c`];
  const children = [];
  const runtimes = [];
  // Ctrl-C: finish the rpc in flight, then clean up (the daemons run in their own process groups, so the
  // terminal's SIGINT does not stop them before the cleanup has used them)
  let interrupted = false;
  const onSignal = () => {
    if (!interrupted) console.log('\ninterrupted: cleaning up ...');
    interrupted = true;
  };
  const check = () => {
    if (interrupted) throw new Error('interrupted');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    // a guard like the tests': pods stay on the box
    sh('iptables', ['-w', '5', '-N', guard]);
    sh('iptables', ['-w', '5', '-A', guard, '-s', SUBNET_ALL, '!', '-d', SUBNET_ALL, '-j', 'DROP']);
    sh('iptables', ['-w', '5', '-I', 'FORWARD', '-j', guard]);

    console.log('building the images from the host busybox and catatonit ...');
    sh('bash', [join(root, 'scripts/busybox-image.sh'), join(dir, 'busybox.tar'), BUSYBOX]);
    sh('bash', [join(root, 'scripts/busybox-image.sh'), join(dir, 'pause.tar'), PAUSE, '--pause']);

    // skiff
    const sk = join(dir, 'skiff');
    await conflist(join(sk, 'net.d'), `skdemo-${tag}-s`, bridges[0], '10.94.250.0/24', join(sk, 'leases'));
    await writeFile(join(dir, 'skiff.toml'), `[cni]\nconf_dir = "${join(sk, 'net.d')}"\n`);
    const skSock = join(sk, 's.sock');
    const skLog = openSync(join(dir, 'skiff.log'), 'w');
    // SKIFF_BENCH_LOG_LEVEL=debug shows the daemon's phase timings in skiff.log (keep it with SKIFF_BENCH_KEEP=1);
    // SKIFF_BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the daemon's node
    const skiffCmd = skiffCommand(root, (process.env.SKIFF_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean));
    const logLevel = process.env.SKIFF_BENCH_LOG_LEVEL ?? 'warn';
    const skProc = spawn(skiffCmd.cmd, [...skiffCmd.args, 'daemon', '--config', join(dir, 'skiff.toml'), '--root', join(sk, 'root'), '--state', join(sk, 'state'), '--socket', skSock, '--log-level', logLevel], { stdio: ['ignore', skLog, skLog], detached: true });
    children.push(skProc);

    // containerd, with its own config, root, state and socket
    const cd = join(dir, 'containerd');
    await conflist(join(cd, 'net.d'), `skdemo-${tag}-c`, bridges[1], '10.94.251.0/24', join(cd, 'leases'));
    const cdSock = join(cd, 'c.sock');
    await writeFile(
      join(dir, 'containerd.toml'),
      [
        'version = 2',
        `root = "${join(cd, 'root')}"`,
        `state = "${join(cd, 'state')}"`,
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
        '[grpc]',
        `  address = "${cdSock}"`,
        '[ttrpc]',
        `  address = "${cdSock}.ttrpc"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${join(cd, 'opt')}"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "${PAUSE}"`,
        // root here lacks CAP_SYS_RESOURCE (see machine facts)
        '  restrict_oom_score_adj = true',
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        '[plugins."io.containerd.grpc.v1.cri".cni]',
        '  bin_dir = "/usr/lib/cni"',
        `  conf_dir = "${join(cd, 'net.d')}"`,
        '[plugins."io.containerd.grpc.v1.cri".registry]',
        `  config_path = "${join(cd, 'certs.d')}"`,
        '',
      ].join('\n'),
    );
    const cdLog = openSync(join(dir, 'containerd.log'), 'w');
    const cdProc = spawn('containerd', ['--config', join(dir, 'containerd.toml')], { stdio: ['ignore', cdLog, cdLog], detached: true });
    children.push(cdProc);

    const skiff = { name: 'skiff', proc: skProc, client: connect(skSock, 60_000), sock: skSock, dir: sk, pods: [], containers: [], phases: [] };
    const ctrd = { name: 'containerd', proc: cdProc, client: connect(cdSock, 60_000), sock: cdSock, dir: cd, pods: [], containers: [], phases: [] };
    runtimes.push(skiff, ctrd);
    for (const r of runtimes) {
      await waitFor(`${r.name} socket`, () => access(r.sock).then(() => true));
      await waitFor(`${r.name} Version`, async () => !!(await runtimeCall(r.client, 'Version', {}, 2000)).runtime_name);
      const v = await runtimeCall(r.client, 'Version', {});
      console.log(`${r.name}: ${v.runtime_name} ${v.runtime_version}, socket ${r.sock}`);
    }

    console.log('loading the image into both ...');
    sh(process.execPath, [join(root, 'bin/skiff'), '-r', skSock, 'load', join(dir, 'busybox.tar')]);
    for (const f of ['busybox.tar', 'pause.tar']) sh('ctr', ['-a', cdSock, '-n', 'k8s.io', 'images', 'import', join(dir, f)]);

    const podConfig = (r, i) => ({
      metadata: { name: `bench-${i}`, namespace: 'skiff-bench', uid: `${tag}-${r.name}-${i}`, attempt: 0 },
      hostname: `bench-${i}`,
      log_directory: join(r.dir, 'logs', String(i)),
      labels: { bench: tag },
      linux: {},
    });
    const ctrConfig = {
      metadata: { name: 'sleeper', attempt: 0 },
      image: { image: BUSYBOX },
      command: ['sleep', '3600'],
      log_path: 'sleeper/0.log',
      linux: {},
    };

    const podUp = async (r, i) => {
      check();
      const config = podConfig(r, i);
      const t0 = performance.now();
      const pod = (await runtimeCall(r.client, 'RunPodSandbox', { config, runtime_handler: '' })).pod_sandbox_id;
      const t1 = performance.now();
      r.pods.push(pod);
      const cid = (await runtimeCall(r.client, 'CreateContainer', { pod_sandbox_id: pod, config: ctrConfig, sandbox_config: config })).container_id;
      const t2 = performance.now();
      r.containers.push(cid);
      await runtimeCall(r.client, 'StartContainer', { container_id: cid });
      r.phases.push([t1 - t0, t2 - t1, performance.now() - t2]);
      for (;;) {
        const st = (await runtimeCall(r.client, 'ContainerStatus', { container_id: cid, verbose: false })).status;
        if (st?.state === 'CONTAINER_RUNNING') break;
        if (st?.state === 'CONTAINER_EXITED') throw new Error(`${r.name}: container exited (${st.exit_code} ${st.reason} ${st.message})`);
        await sleep(2);
      }
      return performance.now() - t0;
    };
    const podDown = async (r, pod) => {
      await runtimeCall(r.client, 'StopPodSandbox', { pod_sandbox_id: pod });
      await runtimeCall(r.client, 'RemovePodSandbox', { pod_sandbox_id: pod });
      r.pods = r.pods.filter((p) => p !== pod);
    };

    console.log('warm-up pod on each (first unpack of the image, first CNI call) ...');
    for (const r of runtimes) {
      await podUp(r, 'warmup');
      await podDown(r, r.pods[r.pods.length - 1]);
      r.containers = [];
      r.phases = [];
    }

    const times = { skiff: [], containerd: [] };
    for (let i = 0; i < n; i++) {
      const order = i % 2 ? [ctrd, skiff] : [skiff, ctrd];
      for (const r of order) times[r.name].push(await podUp(r, i));
      process.stdout.write(`\rpods up: ${i + 1}/${n}`);
    }
    process.stdout.write('\n');

    // let start-up garbage settle before reading memory
    await sleep(2000);
    const procs = await processes();
    const mem = {};
    for (const r of runtimes) {
      const daemon = await memory(r.proc.pid);
      let monitors;
      let infra = [];
      if (r === skiff) {
        monitors = procs.filter((p) => p.comm === 'conmon' && p.argv.some((a) => r.containers.some((c) => a.includes(c))));
        // a pod-shared PID namespace would add catatonit; these pods don't ask for one
        infra = procs.filter((p) => p.comm === 'catatonit' && p.argv.some((a) => a.includes(r.dir)));
      } else {
        monitors = procs.filter((p) => p.comm.startsWith('containerd-shim') && p.argv.includes(cdSock));
        const shimPids = new Set(monitors.map((p) => p.pid));
        infra = procs.filter((p) => shimPids.has(p.ppid) && p.argv[0] === '/pause');
      }
      mem[r.name] = { daemon, monitors: monitors.length, monitor: await sumMemory(monitors.map((p) => p.pid)), infra: infra.length, infraMem: await sumMemory(infra.map((p) => p.pid)) };
    }

    const row = (label, s, c, unit = '') => {
      const ratio = c > 0 ? (s / c).toFixed(2) : 'n/a';
      console.log(`${label.padEnd(44)}${`${s}${unit}`.padStart(12)}${`${c}${unit}`.padStart(14)}${ratio.padStart(18)}`);
    };
    const ms = (x) => Number(x.toFixed(1));
    console.log(`\n${n} sequential pods each (one container: sleep), CNI bridge networking, runc:`);
    console.log(`${''.padEnd(44)}${'skiff'.padStart(12)}${'containerd'.padStart(14)}${'skiff/containerd'.padStart(18)}`);
    row('pod start, median (ms)', ms(median(times.skiff)), ms(median(times.containerd)));
    row('pod start, p90 (ms)', ms(pct(times.skiff, 90)), ms(pct(times.containerd, 90)));
    row('pod start, min (ms)', ms(Math.min(...times.skiff)), ms(Math.min(...times.containerd)));
    ['RunPodSandbox', 'CreateContainer', 'StartContainer'].forEach((rpc, k) =>
      row(`  ${rpc}, median (ms)`, ms(median(skiff.phases.map((p) => p[k]))), ms(median(ctrd.phases.map((p) => p[k])))),
    );
    const s = mem.skiff;
    const c = mem.containerd;
    row(`daemon RSS with ${n} pods (MB)`, mb(s.daemon.rss), mb(c.daemon.rss));
    row(`daemon PSS with ${n} pods (MB)`, mb(s.daemon.pss), mb(c.daemon.pss));
    row('monitor processes (conmon / shim)', s.monitors, c.monitors);
    row('monitor RSS per pod (MB)', mb(s.monitor.rss / n), mb(c.monitor.rss / n));
    row('monitor PSS per pod (MB)', mb(s.monitor.pss / n), mb(c.monitor.pss / n));
    row('infra processes (catatonit / pause)', s.infra, c.infra);
    row('infra RSS per pod (MB)', mb(s.infraMem.rss / n), mb(c.infraMem.rss / n));
    row('runtime RSS per pod, monitor + infra (MB)', mb((s.monitor.rss + s.infraMem.rss) / n), mb((c.monitor.rss + c.infraMem.rss) / n));
    row(`total RSS, daemon + ${n} pods' overhead (MB)`, mb(s.daemon.rss + s.monitor.rss + s.infraMem.rss), mb(c.daemon.rss + c.monitor.rss + c.infraMem.rss));
    console.log(`(RSS counts a shared binary's pages in every process; PSS splits them between the copies.)`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup({ dir, guard, bridges, children, runtimes, runtimeCall, hadRunContainerd });
  }
}

async function cleanup({ dir, guard, bridges, children, runtimes, runtimeCall, hadRunContainerd }) {
  for (const r of runtimes) {
    try {
      const pods = (await runtimeCall(r.client, 'ListPodSandbox', {}, 10_000)).items;
      for (const p of pods) {
        await runtimeCall(r.client, 'StopPodSandbox', { pod_sandbox_id: p.id }, 30_000).catch(() => undefined);
        await runtimeCall(r.client, 'RemovePodSandbox', { pod_sandbox_id: p.id }, 30_000).catch(() => undefined);
      }
    } catch (err) {
      console.error(`cleanup: listing ${r.name} pods: ${err.message}`);
    }
    r.client.close();
  }
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const gone = new Promise((res) => c.once('exit', res));
    c.kill('SIGTERM');
    if ((await Promise.race([gone.then(() => true), sleep(15_000).then(() => false)])) === false) c.kill('SIGKILL');
  }
  // anything still running that belongs to this run (a shim or conmon whose pod could not be removed)
  for (const p of await processes()) {
    if ((p.comm.startsWith('containerd-shim') || p.comm === 'conmon') && p.argv.some((a) => a.startsWith(dir))) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  await unmountBelow(dir);
  for (const b of bridges) quiet('ip', ['link', 'del', b]);
  while (quiet('iptables', ['-w', '5', '-D', 'FORWARD', '-j', guard])) {
    // every jump
  }
  quiet('iptables', ['-w', '5', '-F', guard]);
  quiet('iptables', ['-w', '5', '-X', guard]);
  if (!hadRunContainerd) {
    // only what is empty: rmdir refuses anything another containerd put there since
    for (const d of ['/run/containerd/runc/k8s.io', '/run/containerd/runc', '/run/containerd/s', '/run/containerd']) await rmdir(d).catch(() => undefined);
  }
  if (process.env.SKIFF_BENCH_KEEP) console.log(`kept ${dir}`);
  else await rm(dir, { recursive: true, force: true }).catch((err) => console.error(`cleanup: ${err.message}`));
}
