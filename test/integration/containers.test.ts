// Issue 5: the container lifecycle with real runc/crun under conmon, CNI bridge pods on 10.90.0.0/16.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, rename, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import { loadBusybox } from '../helpers/registry.js';
import { parseCriLogLine } from '../../src/oci/cri-log.js';
import {
  ociDaemon, destroyEnv, setupGuard, teardownGuard, ctrConfig, loadImage, BUSYBOX, runPod, createCtr, startCtr, ctrStatus, waitExited, exec, CRUN_CONFIG, type OciEnv,
} from '../helpers/containers.js';

let env: OciEnv;

beforeAll(async () => {
  setupGuard();
  env = await ociDaemon({ extraConfig: CRUN_CONFIG });
  await loadImage(env, 'docker.io/skoci/app:1', { User: 'app', WorkingDir: '/home/app', Env: ['PATH=/bin', 'FROM_IMAGE=1', 'OVERRIDE=image'], Entrypoint: ['sh', '-c'], Cmd: ['echo image-cmd'] }, [
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' },
    { name: 'etc/group', content: 'root:x:0:\napp:x:1000:\nextra:x:2000:app\nother:x:3000:root\n' },
    { name: 'home', type: 'directory' },
    { name: 'home/app', type: 'directory', mode: 0o777 },
  ]);
});
afterAll(async () => {
  if (env) await destroyEnv(env);
  await teardownGuard();
});

const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

async function logRecords(path: string) {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  expect(lines.pop()).toBe('');
  return lines.map((l) => {
    const r = parseCriLogLine(l);
    expect(r, `not a CRI log line: ${l.slice(0, 100)}`).toBeDefined();
    return r!;
  });
}

describe('container lifecycle', () => {
  it('creates, starts, lists, stops and removes a container; status and events tell the truth', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('web', ['sh', '-c', 'echo up; exec sleep 1000']));
    let s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_CREATED');
    expect(s.image_ref).toMatch(/sha256:[0-9a-f]{64}$/);
    expect(s.log_path).toBe(join(pod.config.log_directory!, 'web.log'));
    await startCtr(env, id);
    s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_RUNNING');
    expect(BigInt(s.started_at)).toBeGreaterThan(0n);

    const verbose = await ctrStatus(env, id, true);
    const info = JSON.parse(verbose.info.info);
    expect(info.pid).toBeGreaterThan(0);
    expect(info.runtimeHandler).toBe('runc');
    expect(info.runtimeSpec.process.args).toEqual(['sh', '-c', 'echo up; exec sleep 1000']);

    // filters: id prefix, pod, state, labels
    const list = async (filter: object) => (await runtimeCall(env.d.client, 'ListContainers', { filter })).containers.map((c) => c.id);
    expect(await list({ id: id.slice(0, 10) })).toEqual([id]);
    expect(await list({ pod_sandbox_id: pod.id })).toEqual([id]);
    expect(await list({ state: { state: 'CONTAINER_RUNNING' }, label_selector: { ctr: 'web' } })).toContain(id);
    expect(await list({ state: { state: 'CONTAINER_EXITED' }, pod_sandbox_id: pod.id })).toEqual([]);
    expect(await list({ label_selector: { ctr: 'nope' } })).toEqual([]);

    // the stats rpcs see the running container (the daemon hands them the container records)
    const stats = await runtimeCall(env.d.client, 'ListContainerStats', { filter: { pod_sandbox_id: pod.id } });
    expect(stats.stats.map((x) => x.attributes?.id)).toEqual([id]);

    const podStatus = await runtimeCall(env.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id });
    expect(podStatus.containers_statuses.map((c) => c.id)).toEqual([id]);
    expect(BigInt(podStatus.timestamp)).toBeGreaterThan(0n);

    const t0 = Date.now();
    await runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout: 1 });
    // `exec sleep` makes sleep PID 1, which the kernel shields from an unhandled SIGTERM: SIGKILL at ~1 s.
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(2000);
    s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(137);
    expect(s.reason).toBe('Error');
    expect(BigInt(s.finished_at)).toBeGreaterThanOrEqual(BigInt(s.started_at));

    await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    expect(await list({ pod_sandbox_id: pod.id })).toEqual([]);
    expect(await codeOf(ctrStatus(env, id))).toBe(grpcStatus.NOT_FOUND);
    // idempotent
    await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    await runtimeCall(env.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  it('writes the CRI log: lines, a >16 KiB line in P records with a final F, and an F after output without newline', async () => {
    const pod = await runPod(env);
    const script = 'echo hello; echo oops >&2; head -c 40000 /dev/zero | tr "\\0" x; echo; printf tail-without-newline';
    const id = await createCtr(env, pod, ctrConfig('logs', ['sh', '-c', script]));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.exit_code).toBe(0);
    expect(s.reason).toBe('Completed');
    const recs = await logRecords(s.log_path);
    const out = recs.filter((r) => r.stream === 'stdout');
    expect(out[0]).toMatchObject({ partial: false, text: 'hello' });
    expect(recs.find((r) => r.stream === 'stderr')).toMatchObject({ partial: false, text: 'oops' });
    for (const r of recs) expect(r.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)$/);
    // the long line: P records, then one F; joined they are the whole line
    const long: string[] = [];
    let i = 1;
    while (out[i].partial) long.push(out[i++].text);
    expect(long.length).toBeGreaterThan(1);
    long.push(out[i++].text);
    expect(long.join('')).toBe('x'.repeat(40000));
    // the unterminated tail: a P with the text, completed by an F
    expect(out[i]).toMatchObject({ partial: true, text: 'tail-without-newline' });
    expect(out[i + 1]).toMatchObject({ partial: false, text: '' });
    expect(out.length).toBe(i + 2);
  });

  it('a tty container runs under a console and its output still reaches the log', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('tty', ['sh', '-c', 'test -t 1 && echo is-a-tty; exit 2'], { tty: true, stdin: true }));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.exit_code).toBe(2);
    expect((await logRecords(s.log_path)).map((r) => r.text.replace(/\r$/, ''))).toContain('is-a-tty');
  });

  it('reports exit code 3 as 3 with reason Error', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('three', ['sh', '-c', 'exit 3']));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(3);
    expect(s.reason).toBe('Error');
  });

  it('runs ExecSync: stdout, stderr, exit code; a sleeping exec past its timeout is killed', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('exec', ['sleep', '1000']));
    await startCtr(env, id);
    const r = await exec(env, id, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r.stdout.toString()).toBe('out\n');
    expect(r.stderr.toString()).toBe('err\n');
    expect(r.exit_code).toBe(7);

    const t0 = Date.now();
    const err = await exec(env, id, ['sh', '-c', 'echo $$ > /tmp/execpid; exec sleep 60'], 1).then(
      () => undefined,
      (e: { code: number; details: string }) => e,
    );
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(err?.code).toBe(grpcStatus.DEADLINE_EXCEEDED);
    expect(err?.details).toMatch(/timed out/);
    // the exec'd process is gone
    const pid = (await exec(env, id, ['cat', '/tmp/execpid'])).stdout.toString().trim();
    const alive = await exec(env, id, ['sh', '-c', `kill -0 ${pid} 2>/dev/null && echo alive || echo dead`]);
    expect(alive.stdout.toString().trim()).toBe('dead');
  });
});

/** Capability bits of CapEff in a /proc/<pid>/status text. */
function capEff(status: string): bigint {
  return BigInt('0x' + /CapEff:\s*([0-9a-f]+)/.exec(status)![1]);
}
const CAP_CHOWN = 0n;
const CAP_NET_RAW = 13n;
const CAP_NET_ADMIN = 12n;
const has = (caps: bigint, bit: bigint) => ((caps >> bit) & 1n) === 1n;

describe('what the container sees', () => {
  it('a read-only rootfs, run_as_user and dropped capabilities are observed from inside', async () => {
    const pod = await runPod(env);
    const id = await createCtr(
      env,
      pod,
      ctrConfig('secure', ['sleep', '1000'], {
        linux: {
          security_context: {
            readonly_rootfs: true,
            run_as_user: { value: 1234 },
            run_as_group: { value: 4321 },
            supplemental_groups: [555],
            capabilities: { drop_capabilities: ['NET_RAW', 'CAP_CHOWN'], add_capabilities: ['NET_ADMIN'], add_ambient_capabilities: [] },
          },
        },
      }),
    );
    await startCtr(env, id);
    const ro = await exec(env, id, ['sh', '-c', 'touch /newfile 2>&1; echo rc=$?']);
    expect(ro.stdout.toString()).toMatch(/Read-only file system/);
    expect(ro.stdout.toString()).toMatch(/rc=1/);
    // ExecSync runs as the container's user, like its init
    const ids = await exec(env, id, ['sh', '-c', 'id -u; id -g; id -G']);
    expect(ids.stdout.toString().split('\n')).toEqual(['1234', '4321', expect.stringMatching(/^4321 555$/), '']);
    const init = (await exec(env, id, ['cat', '/proc/1/status'])).stdout.toString();
    expect(init).toMatch(/Uid:\s+1234\s/);
    // a non-root user keeps no effective capabilities; the bounding set shows add and drop
    expect(capEff(init)).toBe(0n);
    const bnd = BigInt('0x' + /CapBnd:\s*([0-9a-f]+)/.exec(init)![1]);
    expect(has(bnd, CAP_NET_RAW)).toBe(false);
    expect(has(bnd, CAP_CHOWN)).toBe(false);
    expect(has(bnd, CAP_NET_ADMIN)).toBe(true);
  });

  it('root with dropped capabilities: CapEff lacks them and chown fails', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('rootcaps', ['sleep', '1000'], { linux: { security_context: { capabilities: { drop_capabilities: ['CHOWN', 'NET_RAW'] } } } }));
    await startCtr(env, id);
    const st = (await exec(env, id, ['cat', '/proc/1/status'])).stdout.toString();
    expect(has(capEff(st), CAP_CHOWN)).toBe(false);
    expect(has(capEff(st), CAP_NET_RAW)).toBe(false);
    expect(has(capEff(st), 1n /* DAC_OVERRIDE, a default */)).toBe(true);
    const r = await exec(env, id, ['sh', '-c', 'touch /tmp/f && chown 1:1 /tmp/f']);
    expect(r.exit_code).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/Operation not permitted/);
  });

  it('image user by name with its groups, working dir, env merge, and command/args rules', async () => {
    const pod = await runPod(env);
    // the image's entrypoint (sh -c) with args replacing its cmd
    const id = await createCtr(env, pod, ctrConfig('app', [], {
      image: { image: 'docker.io/skoci/app:1' },
      args: ['id -un; id -G; pwd; echo $FROM_IMAGE $OVERRIDE $HOME; hostname'],
      envs: [{ key: 'OVERRIDE', value: 'request' }],
    }));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.exit_code).toBe(0);
    const text = (await logRecords(s.log_path)).map((r) => r.text);
    expect(text).toEqual(['app', '1000 2000', '/home/app', '1 request /home/app', pod.config.hostname]);
    // no command, no args: the image's entrypoint + cmd
    const id2 = await createCtr(env, pod, ctrConfig('app2', [], { image: { image: 'docker.io/skoci/app:1' } }));
    await startCtr(env, id2);
    const s2 = await waitExited(env, id2);
    expect((await logRecords(s2.log_path)).map((r) => r.text)).toEqual(['image-cmd']);
  });

  it('bind mounts: read-only is enforced, status lists them, a missing host path is INVALID_ARGUMENT', async () => {
    const pod = await runPod(env);
    const host = join(env.dir, 'share');
    await mkdir(host, { recursive: true });
    await writeFile(join(host, 'f'), 'from-host');
    const mounts = [{ container_path: '/data', host_path: host, readonly: true }];
    const id = await createCtr(env, pod, ctrConfig('mnt', ['sleep', '1000'], { mounts }));
    await startCtr(env, id);
    expect((await exec(env, id, ['cat', '/data/f'])).stdout.toString()).toBe('from-host');
    const w = await exec(env, id, ['sh', '-c', 'echo x > /data/g']);
    expect(w.exit_code).not.toBe(0);
    const s = (await ctrStatus(env, id)).status!;
    expect(s.mounts).toEqual([expect.objectContaining({ container_path: '/data', host_path: host, readonly: true })]);
    const missing = [{ container_path: '/data', host_path: join(env.dir, 'nope') }];
    expect(await codeOf(createCtr(env, pod, ctrConfig('mnt2', ['true'], { mounts: missing })))).toBe(grpcStatus.INVALID_ARGUMENT);
  });

  it('the same container runs under the crun handler', async () => {
    await loadBusybox(env.d, BUSYBOX, 'crun');
    const pod = await runPod(env, undefined, 'crun');
    const id = await createCtr(env, pod, ctrConfig('crun', ['sh', '-c', 'echo from-crun; cat /proc/1/cmdline; sleep 1000']));
    await startCtr(env, id);
    const info = JSON.parse((await ctrStatus(env, id, true)).info.info);
    expect(info.runtimeHandler).toBe('crun');
    const r = await exec(env, id, ['sh', '-c', 'echo exec-in-crun; exit 4']);
    expect(r.stdout.toString()).toBe('exec-in-crun\n');
    expect(r.exit_code).toBe(4);
    await runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout: 0 });
    const s = (await ctrStatus(env, id)).status!;
    expect(s.exit_code).toBe(137);
    expect((await logRecords(s.log_path))[0].text).toBe('from-crun');
  });
});

describe('ExecSync limits', () => {
  it('returns when the main process exits even if a background child holds stdout', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('bg', ['sleep', '1000']));
    await startCtr(env, id);
    const t0 = Date.now();
    const r = await exec(env, id, ['sh', '-c', 'sleep 30 & echo started'], 20);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(r.stdout.toString()).toBe('started\n');
    expect(r.exit_code).toBe(0);
  });

  it('a client that gives up (deadline) takes its exec down with it', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('cancel', ['sleep', '1000']));
    await startCtr(env, id);
    const err = await runtimeCall(env.d.client, 'ExecSync', { container_id: id, cmd: ['sh', '-c', 'echo $$ > /tmp/p; exec sleep 60'], timeout: 0 }, 1000).then(
      () => undefined,
      (e: { code: number }) => e,
    );
    expect(err?.code).toBe(grpcStatus.DEADLINE_EXCEEDED);
    await new Promise((r) => setTimeout(r, 500));
    const pid = (await exec(env, id, ['cat', '/tmp/p'])).stdout.toString().trim();
    expect((await exec(env, id, ['sh', '-c', `kill -0 ${pid} 2>/dev/null && echo alive || echo dead`])).stdout.toString().trim()).toBe('dead');
  });

  it('caps output at 16 MiB and keeps daemon memory flat under a `yes` flood', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('yes', ['sleep', '1000']));
    await startCtr(env, id);
    const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${env.d.proc.pid}/status`, 'utf8'))![1]) * 1024;
    const r = await exec(env, id, ['sh', '-c', 'yes | head -c 40000000; echo done >&2']);
    expect(r.stdout.length).toBe(16 * 1024 * 1024 - 1024);
    expect(r.stdout.subarray(0, 4).toString()).toBe('y\ny\n');
    // the budget is shared: stdout used it all
    expect(r.stderr.length).toBe(0);
    const before = await rss();
    // an endless flood: read and dropped past the cap until the timeout kills it
    let peak = before;
    const sampler = setInterval(() => void rss().then((v) => (peak = Math.max(peak, v))), 100);
    const err = await exec(env, id, ['yes'], 4).then(() => undefined, (e: { code: number }) => e);
    clearInterval(sampler);
    expect(err?.code).toBe(grpcStatus.DEADLINE_EXCEEDED);
    expect(peak - before).toBeLessThan(120 * 1024 * 1024);
  });
});

describe('resources and logs', () => {
  it('UpdateContainerResources applies through the runtime; status reports it', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('upd', ['sleep', '1000'], { linux: { resources: { memory_limit_in_bytes: 64 * 1024 * 1024 } } }));
    await startCtr(env, id);
    const limit = async () => (await exec(env, id, ['cat', '/sys/fs/cgroup/memory/memory.limit_in_bytes'])).stdout.toString().trim();
    expect(await limit()).toBe(String(64 * 1024 * 1024));
    await runtimeCall(env.d.client, 'UpdateContainerResources', { container_id: id, linux: { memory_limit_in_bytes: 96 * 1024 * 1024, cpu_shares: 512 } });
    expect(await limit()).toBe(String(96 * 1024 * 1024));
    expect((await exec(env, id, ['cat', '/sys/fs/cgroup/cpu/cpu.shares'])).stdout.toString().trim()).toBe('512');
    const s = (await ctrStatus(env, id)).status!;
    expect(s.resources?.linux?.memory_limit_in_bytes).toBe(String(96 * 1024 * 1024));
  });

  it('ReopenContainerLog: after a rename, new output goes to a new file at the log path', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('rot', ['sh', '-c', 'i=0; while :; do echo line-$i; i=$((i+1)); sleep 0.1; done']));
    await startCtr(env, id);
    const path = (await ctrStatus(env, id)).status!.log_path;
    await new Promise((r) => setTimeout(r, 500));
    await rename(path, `${path}.1`);
    await runtimeCall(env.d.client, 'ReopenContainerLog', { container_id: id });
    await new Promise((r) => setTimeout(r, 500));
    const old = await logRecords(`${path}.1`);
    const fresh = await logRecords(path);
    expect(old.length).toBeGreaterThan(0);
    expect(fresh.length).toBeGreaterThan(0);
    const n = (t: string) => Number(t.split('-')[1]);
    expect(n(fresh[0].text)).toBeGreaterThan(n(old[old.length - 1].text));
    await runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout: 0 });
    expect(await codeOf(runtimeCall(env.d.client, 'ReopenContainerLog', { container_id: id }))).toBe(grpcStatus.FAILED_PRECONDITION);
  });
});

describe('oom_score_adj', () => {
  it('is clamped to the daemon’s own (no CAP_SYS_RESOURCE here): a -999 request still starts', async () => {
    const own = Number((await readFile(`/proc/${env.d.proc.pid}/oom_score_adj`, 'utf8')).trim());
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('oomadj', ['sleep', '1000'], { linux: { resources: { oom_score_adj: -999 } } }));
    await startCtr(env, id);
    const inside = Number((await exec(env, id, ['cat', '/proc/1/oom_score_adj'])).stdout.toString().trim());
    expect(inside).toBe(Math.max(own, -999));
    const high = await createCtr(env, pod, ctrConfig('oomadj2', ['sleep', '1000'], { linux: { resources: { oom_score_adj: 900 } } }));
    await startCtr(env, high);
    expect((await exec(env, high, ['cat', '/proc/1/oom_score_adj'])).stdout.toString().trim()).toBe(String(Math.max(own, 900)));
  });
});

describe('OOM', () => {
  it('a container killed by the OOM killer reports OOMKilled', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('oom', ['sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'], { linux: { resources: { memory_limit_in_bytes: 32 * 1024 * 1024, memory_swap_limit_in_bytes: 32 * 1024 * 1024 } } }));
    await startCtr(env, id);
    const s = await waitExited(env, id, 30_000);
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.reason).toBe('OOMKilled');
    expect(s.exit_code).toBe(137);
  });
});

describe('bad input', () => {
  it('answers with the right codes', async () => {
    const pod = await runPod(env);
    const c = env.d.client;
    expect(await codeOf(runtimeCall(c, 'CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig('', ['true']) }))).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(await codeOf(runtimeCall(c, 'CreateContainer', { pod_sandbox_id: 'nope', config: ctrConfig('x', ['true']) }))).toBe(grpcStatus.NOT_FOUND);
    expect(await codeOf(runtimeCall(c, 'CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig('x', ['true'], { image: { image: 'docker.io/library/nothere:1' } }) }))).toBe(grpcStatus.NOT_FOUND);
    expect(await codeOf(runtimeCall(c, 'CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig('x', ['true'], { linux: { security_context: { capabilities: { add_capabilities: ['CAP_BOGUS'] } } } }) }))).toBe(grpcStatus.INVALID_ARGUMENT);
    // the runtime refuses: the error says why, and the half-made container is undone
    const missing = await createCtr(env, pod, ctrConfig('nobinary', ['/nope'])).then(() => undefined, (e: { code: number; details: string }) => e);
    expect(missing?.code).toBe(grpcStatus.INTERNAL);
    expect(missing?.details).toMatch(/\/nope.*no such file/);
    const id = await createCtr(env, pod, ctrConfig('dup', ['sleep', '100']));
    expect(await codeOf(createCtr(env, pod, ctrConfig('dup', ['sleep', '100'])))).toBe(grpcStatus.ALREADY_EXISTS);
    expect(await codeOf(runtimeCall(c, 'ExecSync', { container_id: id, cmd: ['true'] }))).toBe(grpcStatus.FAILED_PRECONDITION);
    expect(await codeOf(runtimeCall(c, 'ExecSync', { container_id: id, cmd: [] }))).toBe(grpcStatus.INVALID_ARGUMENT);
    await startCtr(env, id);
    expect(await codeOf(startCtr(env, id))).toBe(grpcStatus.FAILED_PRECONDITION);
    expect(await codeOf(runtimeCall(c, 'StopContainer', { container_id: 'nope', timeout: 1 }))).toBe(grpcStatus.NOT_FOUND);
    expect(await codeOf(runtimeCall(c, 'ContainerStatus', { container_id: '' }))).toBe(grpcStatus.INVALID_ARGUMENT);
    // a stopped pod takes no new containers
    await runtimeCall(c, 'StopPodSandbox', { pod_sandbox_id: pod.id });
    expect(await codeOf(createCtr(env, pod, ctrConfig('late', ['true'])))).toBe(grpcStatus.FAILED_PRECONDITION);
    // nothing half-made was left behind by the failures: records, bundles, rootfs mounts
    const all = await runtimeCall(c, 'ListContainers', { filter: { pod_sandbox_id: pod.id } });
    expect(all.containers.map((x) => x.metadata?.name)).toEqual(['dup']);
    const { readdir } = await import('node:fs/promises');
    const ids = (await runtimeCall(c, 'ListContainers', {})).containers.map((x) => x.id).sort();
    expect((await readdir(join(env.d.state, 'containers'))).sort()).toEqual(ids);
    expect((await readdir(join(env.d.root, 'rootfs'))).filter((n) => !n.startsWith('.')).sort()).toEqual(ids);
  });
});
