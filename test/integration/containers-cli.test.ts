// The container verbs of the skiff client (run, create, start, ps, inspect, logs, exec -s, update, stop,
// rm) against a real daemon: runc + conmon, a CNI bridge on the cli subnet (10.94.0.0/16), busybox loaded.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, makeScratchDir, removeScratchDir, cliFor, type TestDaemon } from '../helpers/daemon.js';
import { removeCgroupTree } from '../helpers/cgroups.js';
import { installGuard, removeGuard, makeNetwork, deleteBridge, type TestNetwork } from '../helpers/cni.js';
import { loadBusybox } from '../helpers/registry.js';

const GUARD = 'SKIFF-CLI-GUARD';
const CGROUP_TOP = `/skiff-test-cli-${randomBytes(3).toString('hex')}`;
const IMAGE = 'docker.io/library/busybox:latest';
let d: TestDaemon;
let net: TestNetwork;
let dir: string;
let seq = 0;

beforeAll(async () => {
  installGuard(GUARD, '10.94.0.0/16');
  dir = await makeScratchDir('skdemo-cli-');
  net = await makeNetwork(dir, { prefix: 'skdemo', net16: '10.94' });
  d = await startDaemon({ dir, config: `cgroup_parent = "${CGROUP_TOP}"\n[cni]\nconf_dir = "${net.confDir}"\n` });
  await loadBusybox(d, IMAGE);
});
afterAll(async () => {
  await cli('rm', '-f', '-a').catch(() => undefined);
  await cli('rmp', '-f', '-a').catch(() => undefined);
  await d.cleanup();
  // the daemon helper keeps a dir it was given: ours to remove
  await removeScratchDir(dir);
  deleteBridge(net);
  removeGuard(GUARD);
  await removeCgroupTree(CGROUP_TOP);
});

const { cli, ok } = cliFor(() => d.socket);

/** Writes a pod config (kubelet's pod labels included) and returns its file. */
async function podFile(name: string): Promise<string> {
  const file = join(dir, `pod-${name}.json`);
  await writeFile(
    file,
    JSON.stringify({
      metadata: { name, namespace: 'cli-ns', uid: `uid-${name}`, attempt: 0 },
      hostname: name,
      logDirectory: join(dir, 'logs', name),
      labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': 'cli-ns', suite: 'cli' },
      linux: { cgroupParent: `${CGROUP_TOP}/${name}` },
    }),
  );
  return file;
}

/** Writes a container config as YAML (proto field names) and returns its file. */
async function ctrFile(name: string, command: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const file = join(dir, `ctr-${name}-${++seq}.yaml`);
  const { stringify } = await import('yaml');
  await writeFile(file, stringify({ metadata: { name, attempt: 0 }, image: { image: IMAGE }, command, log_path: `${name}-${seq}.log`, labels: { ctr: name, suite: 'cli' }, ...extra }));
  return file;
}

interface Inspected {
  status: { state: string; exitCode: number; reason: string; finishedAt: string; logPath: string };
}

async function waitState(id: string, state: string, timeoutMs = 15_000): Promise<Inspected> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = JSON.parse(await ok('inspect', '-q', id)) as Inspected;
    if (st.status.state === state) return st;
    if (Date.now() > deadline) throw new Error(`${id} stayed ${st.status.state}, wanted ${state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Each CLI call is a fresh node process (about 0.4 s of CPU): generous timeouts for a loaded 2-core machine.
describe('container verbs of the skiff client', () => {
  it('run, ps (filters and formats), inspect, exec -s (exit codes, streams, timeout), update, stop, rm', { timeout: 240_000 }, async () => {
    const pod = await podFile('runner');
    // kubelet puts the pod's name and namespace on each container's labels: ps shows them
    const ctr = await ctrFile('sleeper', ['sh', '-c', "trap 'exit 0' TERM; echo started; while :; do sleep 1; done"], {
      labels: { ctr: 'sleeper', 'io.kubernetes.pod.name': 'runner', 'io.kubernetes.pod.namespace': 'cli-ns' },
    });
    const id = (await ok('run', '--no-pull', ctr, pod)).trim();
    expect(id).toMatch(/^[0-9a-f]{64}$/);

    const table = await ok('ps');
    const header = table.split('\n')[0];
    expect(header.split(/\s{2,}/)).toEqual(['CONTAINER', 'IMAGE', 'CREATED', 'STATE', 'NAME', 'ATTEMPT', 'POD ID', 'POD', 'NAMESPACE']);
    const row = table.split('\n').find((l) => l.startsWith(id.slice(0, 13)))!;
    expect(row).toMatch(/Running\s+sleeper\s+0\s+[0-9a-f]{13}\s+runner\s+cli-ns/);
    expect((await ok('ps', '-q')).split('\n')).toContain(id);
    expect((await ok('ps', '-q', '--name', '^sleep')).trim()).toBe(id);
    expect((await ok('ps', '-q', '--name', '^nomatch$')).trim()).toBe('');
    expect((await ok('ps', '-q', '--label', 'ctr=sleeper', '--state', 'running')).trim()).toBe(id);
    expect((await ok('ps', '-q', '--state', 'exited', '--label', 'ctr=sleeper')).trim()).toBe('');
    expect((await ok('ps', '-q', '--id', id.slice(0, 8))).trim()).toBe(id);
    expect((await ok('ps', '-q', '--namespace', 'cli-n')).split('\n')).toContain(id);
    const asJson = JSON.parse(await ok('ps', '-o', 'json', '--id', id));
    expect(asJson.containers[0]).toMatchObject({ id, state: 'CONTAINER_RUNNING', metadata: { name: 'sleeper' }, podSandboxId: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await ok('ps', '-o', 'yaml', '--id', id)).toContain(`id: ${id}`);
    expect(await ok('ps', '-v', '--id', id)).toContain(`ID: ${id}\nPodID: `);

    const inspected = JSON.parse(await ok('inspect', id));
    expect(inspected.status).toMatchObject({ id, state: 'CONTAINER_RUNNING', logPath: expect.stringContaining('sleeper') });
    expect(inspected.status.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    expect(inspected.status.finishedAt).toBe('');
    // where crictl puts it: `jq .info.pid`
    expect(inspected.info.pid).toBeGreaterThan(1);
    expect(await ok('inspect', '-o', 'table', id)).toMatch(/State: Running\n/);
    expect(JSON.parse(await ok('inspect', '-q', '--name', '^sleeper$')).status.id).toBe(id);

    // exec -s: stdout and stderr kept apart, the command's exit code becomes ours
    let r = await cli('exec', '-s', id, 'sh', '-c', 'echo out; echo err >&2; exit 7');
    expect(r).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n' });
    r = await cli('exec', id, 'cat', '/etc/hostname');
    expect(r).toMatchObject({ code: 0, stdout: 'runner\n' });
    // options after the container ID belong to the command
    r = await cli('exec', '-s', id, 'ls', '-d', '/etc');
    expect(r).toMatchObject({ code: 0, stdout: '/etc\n' });
    const t0 = Date.now();
    r = await cli('exec', '-s', '--timeout', '1', id, 'sleep', '30');
    expect(r.code).not.toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);

    // update goes through to the container's cgroup
    expect((await ok('update', '--memory', String(96 * 1024 * 1024), id)).trim()).toBe(id);
    r = await cli('exec', '-s', id, 'sh', '-c', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max');
    expect(r.stdout.trim()).toBe(String(96 * 1024 * 1024));

    // rm refuses a running container without -f; stop uses -t as its grace period
    r = await cli('rm', id);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('running');
    expect((await ok('stop', '-t', '5', id)).trim()).toBe(id);
    const stopped = await waitState(id, 'CONTAINER_EXITED');
    expect(stopped.status.exitCode).toBe(0);
    expect(stopped.status.finishedAt).toMatch(/Z$/);
    const logPath = stopped.status.logPath;
    expect((await ok('rm', id)).trim()).toBe(id);
    const { existsSync } = await import('node:fs');
    expect(existsSync(logPath), 'rm removes the log file as crictl does').toBe(false);
    expect((await ok('ps', '-a', '-q', '--id', id)).trim()).toBe('');
  });

  it('create + start in a pod from runp; logs joins split lines, keeps streams apart, --tail/--timestamps/--since; exit code 3', { timeout: 240_000 }, async () => {
    const pod = await podFile('logger');
    const podId = (await ok('runp', pod)).trim();
    // a 200 000-byte line (more than a pipe holds) (conmon splits it into P records), stderr, a last line without a newline
    const script = 'head -c 200000 /dev/zero | tr "\\0" x; echo; echo to-stderr >&2; sleep 0.3; echo second; printf no-newline; exit 3';
    const ctr = await ctrFile('logger', ['sh', '-c', script]);
    const id = (await ok('create', podId, ctr, pod)).trim();
    expect(JSON.parse(await ok('inspect', id)).status.state).toBe('CONTAINER_CREATED');
    expect((await ok('start', id)).trim()).toBe(id);
    const st = await waitState(id, 'CONTAINER_EXITED');
    expect(st.status).toMatchObject({ exitCode: 3, reason: 'Error' });

    const r = await cli('logs', id);
    expect(r.code).toBe(0);
    // the last line's final F was written when the container exited (as kubelet prints it: with a newline)
    expect(r.stdout).toBe(`${'x'.repeat(200000)}\nsecond\nno-newline\n`);
    expect(r.stderr).toBe('to-stderr\n');
    // the long line really was split in the file: the joining is what made it whole
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(st.status.logPath, 'utf8')).toMatch(/ stdout P x+\n/);

    expect((await cli('logs', '--tail', '1', id)).stdout).toBe('no-newline\n');
    expect((await cli('logs', '--tail', '2', id)).stdout).toBe('second\nno-newline\n');
    const stamped = await cli('logs', '--timestamps', '--tail', '2', id);
    expect(stamped.stdout).toMatch(/^\d{4}-\d\d-\d\dT\S+ second\n\d{4}-\d\d-\d\dT\S+ no-newline\n$/);
    expect((await cli('logs', '--since', '1h', id)).stdout).toContain('second');
    expect((await cli('logs', '--since', new Date(Date.now() + 60_000).toISOString(), id)).stdout).toBe('');
    expect((await cli('logs', '--tail', '2', '--limit-bytes', '9', id)).stdout).toBe('second\nno');

    // a reader that stops early (| head) ends the client quietly
    const { spawnSync } = await import('node:child_process');
    const { SKIFF_BIN } = await import('../helpers/daemon.js');
    for (let i = 0; i < 3; i++) {
      const piped = spawnSync('bash', ['-c', `set -o pipefail; node ${SKIFF_BIN} -r ${d.socket} logs ${id} | head -c 3`], { encoding: 'utf8' });
      expect(piped.stdout).toBe('xxx');
      // the container's own stderr line may or may not have been written before the pipe closed
      expect(['', 'to-stderr\n']).toContain(piped.stderr);
      expect(piped.status).toBe(0);
    }

    expect((await ok('ps', '-q', '--state', 'exited', '--pod', podId)).trim()).toBe(id);
    expect((await ok('ps', '-q', '--pod', podId)).trim()).toBe('');
    expect((await ok('ps', '-q', '-a', '--pod', podId)).trim()).toBe(id);
  });

  it('logs -f follows until the container exits; logs -p reads the previous attempt', { timeout: 240_000 }, async () => {
    const pod = await podFile('follower');
    const podId = (await ok('runp', pod)).trim();
    const first = await ctrFile('tick', ['sh', '-c', 'echo attempt-zero']);
    const id0 = (await ok('create', podId, first, pod)).trim();
    await ok('start', id0);
    await waitState(id0, 'CONTAINER_EXITED');

    const second = await ctrFile('tick', ['sh', '-c', 'for i in 1 2 3 4 5; do echo tick-$i; sleep 0.3; done'], { metadata: { name: 'tick', attempt: 1 } });
    const id1 = (await ok('create', podId, second, pod)).trim();
    await ok('start', id1);
    const t0 = Date.now();
    const followed = await cli('logs', '-f', id1);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toBe('tick-1\ntick-2\ntick-3\ntick-4\ntick-5\n');
    // it returned because the container ended, not at the start nor much later
    expect(Date.now() - t0).toBeGreaterThan(800);
    expect(Date.now() - t0).toBeLessThan(10_000);

    expect((await cli('logs', '-p', id1)).stdout).toBe('attempt-zero\n');
    const none = await cli('logs', '-p', id0);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no previous instance');
  });

  it('run removes the pod again when the container cannot be created; errors name the container and the gRPC code', { timeout: 240_000 }, async () => {
    const pod = await podFile('broken');
    const ctr = await ctrFile('nope', ['true'], { image: { image: 'docker.io/library/not-loaded:1' } });
    const r = await cli('run', '--no-pull', ctr, pod);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/skiff: rpc error: code = \w+ desc = .*not-loaded/);
    expect((await ok('pods', '-q', '--name', '^broken$')).trim()).toBe('');

    const missing = await cli('start', 'f'.repeat(64));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`${'f'.repeat(64)}: rpc error: code = NOT_FOUND`);
    expect((await cli('ps', '--state', 'sleeping')).stderr).toContain('--state should be one of created, running, exited or unknown');
    expect((await cli('update', 'abc')).stderr).toContain('nothing to update');
    expect((await cli('exec', '-it', 'abc', 'sh')).stderr).toContain('code = NOT_FOUND desc = container "abc" not found');
    expect((await cli('stop')).stderr).toContain('no container ID given');
  });

  it('stop -a and rm -a', { timeout: 240_000 }, async () => {
    const pod = await podFile('many');
    const podId = (await ok('runp', pod)).trim();
    const ids: string[] = [];
    for (const n of ['a', 'b']) {
      const id = (await ok('create', podId, await ctrFile(`many-${n}`, ['sleep', '60']), pod)).trim();
      await ok('start', id);
      ids.push(id);
    }
    const stopped = (await ok('stop', '-a')).trim().split('\n');
    for (const id of ids) expect(stopped).toContain(id);
    for (const id of ids) await waitState(id, 'CONTAINER_EXITED');
    const removed = (await ok('rm', '-a')).trim().split('\n');
    for (const id of ids) expect(removed).toContain(id);
    expect((await ok('ps', '-a', '-q', '--pod', podId)).trim()).toBe('');
  });
});
