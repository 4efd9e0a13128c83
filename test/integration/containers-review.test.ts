// Faults found in review of the container/OCI area, each pinned by a test through real gRPC, a real
// daemon and real runc: error codes of CreateContainer, errors that carry the container id, a resource
// update that fails leaving nothing changed, and the RuntimeDefault seccomp profile.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import { ociDaemon, destroyEnv, setupGuard, teardownGuard, ctrConfig, runPod, podConfig, createCtr, startCtr, ctrStatus, exec, waitExited, type OciEnv } from '../helpers/containers.js';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig.js';

let env: OciEnv;

beforeAll(async () => {
  setupGuard();
  env = await ociDaemon();
});
afterAll(async () => {
  if (env) await destroyEnv(env);
  await teardownGuard();
});

const failure = (p: Promise<unknown>) => p.then(() => ({ code: -1, details: '' }), (e: { code: number; details: string }) => ({ code: e.code, details: e.details }));

describe('CreateContainer error codes', () => {
  it('a missing device or Localhost seccomp profile is INVALID_ARGUMENT (like a missing mount host path)', async () => {
    const pod = await runPod(env);
    const dev = await failure(createCtr(env, pod, ctrConfig('dev', ['true'], { devices: [{ host_path: '/dev/skoci-no-such-device', container_path: '/dev/x', permissions: 'rwm' }] })));
    expect(dev.code).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(dev.details).toContain('/dev/skoci-no-such-device');
    const sec = await failure(
      createCtr(env, pod, ctrConfig('sec', ['true'], { linux: { security_context: { seccomp: { profile_type: 'Localhost', localhost_ref: join(env.dir, 'no-such-profile.json') } } } })),
    );
    expect(sec.code).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(sec.details).toContain('no-such-profile.json');
  });

  it('a plain filesystem error during create is INTERNAL and names the container, and nothing is left', async () => {
    const pod = { config: podConfig(env) };
    // the log dir's parent is a regular file: mkdir fails with ENOTDIR, a plain Node error
    const blocker = join(env.dir, 'not-a-dir');
    await writeFile(blocker, 'x');
    const cfg = { ...pod.config, log_directory: join(blocker, 'logs') };
    const res = await runtimeCall(env.d.client, 'RunPodSandbox', { config: cfg });
    const r = await failure(runtimeCall(env.d.client, 'CreateContainer', { pod_sandbox_id: res.pod_sandbox_id, config: ctrConfig('enotdir', ['true']), sandbox_config: cfg }));
    expect(r.code).toBe(grpcStatus.INTERNAL);
    expect(r.details).toMatch(/ENOTDIR|not a directory/i);
    expect(r.details).toMatch(/container=[0-9a-f]{64}/);
    const list = await runtimeCall(env.d.client, 'ListContainers', { filter: { pod_sandbox_id: res.pod_sandbox_id } });
    expect(list.containers).toEqual([]);
  });
});

describe('UpdateContainerResources', () => {
  it('a spec write that fails changes nothing: the status keeps the old resources', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('upd', ['sleep', '1000'], { linux: { resources: { memory_limit_in_bytes: 64 * 1024 * 1024 } } }));
    await startCtr(env, id);
    const info = JSON.parse((await ctrStatus(env, id, true)).info.info) as { bundle: string };
    // an immutable spec file: neither a write in place nor a rename over it can succeed
    const spec = join(info.bundle, 'config.json');
    execFileSync('chattr', ['+i', spec]);
    try {
      const r = await failure(runtimeCall(env.d.client, 'UpdateContainerResources', { container_id: id, linux: { memory_limit_in_bytes: 96 * 1024 * 1024 } }));
      expect(r.code).not.toBe(-1);
    } finally {
      execFileSync('chattr', ['-i', spec]);
    }
    const s = (await ctrStatus(env, id)).status!;
    expect(s.resources?.linux?.memory_limit_in_bytes).toBe(String(64 * 1024 * 1024));
    // and a later update goes through
    await runtimeCall(env.d.client, 'UpdateContainerResources', { container_id: id, linux: { memory_limit_in_bytes: 80 * 1024 * 1024 } });
    expect((await ctrStatus(env, id)).status!.resources?.linux?.memory_limit_in_bytes).toBe(String(80 * 1024 * 1024));
  });
});

describe('RuntimeDefault seccomp', () => {
  // The host's perl (bind-mounted read-only with its libraries) makes the raw syscalls busybox cannot.
  const hostPerl = [
    { container_path: '/usr', host_path: '/usr', readonly: true },
    { container_path: '/lib', host_path: '/usr/lib', readonly: true },
    { container_path: '/lib64', host_path: '/usr/lib64', readonly: true },
  ];
  // prints "ok" or "errno=N" for: clone(CLONE_NEWUSER), ptrace(PTRACE_TRACEME), io_uring_setup, clone3
  const probe = [
    'use POSIX;',
    'sub say1 { my ($n, $r) = @_; print "$n=", ($r < 0 ? "errno=" . ($! + 0) : "ok"), "\\n"; }',
    'my $r = syscall(56, 0x10000000 | 17, 0, 0, 0, 0); POSIX::_exit(0) if $r == 0; waitpid($r, 0) if $r > 0; say1("clone_newuser", $r);',
    'say1("ptrace", syscall(101, 0, 0, 0, 0));',
    'my $p = "\\0" x 120; say1("io_uring", syscall(425, 1, $p));',
    'my $a = "\\0" x 88; say1("clone3", syscall(435, $a, 88));',
  ].join(' ');

  async function run(name: string, sc: NonNullable<NonNullable<ContainerConfig['linux']>['security_context']>): Promise<{ probes: Record<string, string>; unshare: number }> {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig(name, ['sleep', '1000'], { mounts: hostPerl, linux: { security_context: sc } }));
    await startCtr(env, id);
    const out = await exec(env, id, ['/usr/bin/perl', '-e', probe]);
    const probes = Object.fromEntries(out.stdout.toString().trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const unshare = (await exec(env, id, ['unshare', '-U', 'true'])).exit_code;
    return { probes, unshare };
  }

  it('denies new namespaces and io_uring; clone3 is ENOSYS so libcs fall back to clone', async () => {
    const { probes, unshare } = await run('rd', { seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } });
    expect(unshare).not.toBe(0);
    expect(probes.clone_newuser).toBe('errno=1');
    expect(probes.io_uring).toBe('errno=1');
    expect(probes.clone3).toBe('errno=38');
    expect(probes.ptrace).toBe('errno=1');
  });

  it('Unconfined allows them', async () => {
    const { probes, unshare } = await run('unconf', { seccomp: { profile_type: 'Unconfined', localhost_ref: '' } });
    expect(unshare).toBe(0);
    expect(probes.clone_newuser).toBe('ok');
    expect(probes.ptrace).toBe('ok');
  });

  it('a container granted CAP_SYS_PTRACE may ptrace; CAP_SYS_ADMIN may make namespaces', async () => {
    const ptr = await run('ptr', { seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' }, capabilities: { add_capabilities: ['SYS_PTRACE'] } });
    expect(ptr.probes.ptrace).toBe('ok');
    expect(ptr.probes.clone_newuser).toBe('errno=1');
    const adm = await run('adm', { seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' }, capabilities: { add_capabilities: ['SYS_ADMIN'] } });
    expect(adm.probes.clone_newuser).toBe('ok');
    expect(adm.unshare).toBe(0);
    expect(adm.probes.ptrace).toBe('errno=1');
  });
});

describe('from a hostile lifecycle run', () => {
  const bundleOf = async (id: string) => (JSON.parse((await ctrStatus(env, id, true)).info.info) as { bundle: string }).bundle;
  const conmonOf = async (id: string) => Number((await readFile(join(await bundleOf(id), 'conmon.pid'), 'utf8')).trim());

  it('an exit after its monitor (conmon) was killed is noticed, its code marked unknown', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('orphaned', ['sh', '-c', 'sleep 1; exit 5']));
    await startCtr(env, id);
    process.kill(await conmonOf(id), 'SIGKILL');
    const s = await waitExited(env, id, 15_000);
    expect(s.state).toBe('CONTAINER_EXITED');
    expect([s.exit_code, s.reason]).toEqual([255, 'Error']);
    expect(s.message).toMatch(/monitor/);
  });

  it("an ExecSync whose monitor is killed fails, and the exec'd process goes with it", async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('execmon', ['sleep', '60']));
    await startCtr(env, id);
    const marker = `sleep ${3000 + Math.floor(Math.random() * 1000)}`;
    const pending = failure(exec(env, id, ['sh', '-c', `echo started; ${marker}`]));
    // the exec's conmon is the one started with -e for this container
    let monitor = 0;
    for (let i = 0; i < 100 && !monitor; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const out = spawnSync('pgrep', ['-f', `conmon.*-c ${id}.*--exec-process-spec`], { encoding: 'utf8' }).stdout.trim();
      if (out && spawnSync('pgrep', ['-f', marker]).status === 0) monitor = Number(out.split('\n')[0]);
    }
    expect(monitor).toBeGreaterThan(0);
    process.kill(monitor, 'SIGKILL');
    const res = await pending;
    expect(res.code).toBe(grpcStatus.INTERNAL);
    expect(res.details).toMatch(/monitor/);
    await new Promise((r) => setTimeout(r, 200));
    expect(spawnSync('pgrep', ['-f', marker]).status).toBe(1);
  });

  it('an ExecSync timeout too long for a timer runs the command, not a 1 ms timeout', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('longtimeout', ['sleep', '60']));
    await startCtr(env, id);
    const res = await exec(env, id, ['sh', '-c', 'sleep 0.5; echo done'], 86_400_000);
    expect([res.exit_code, res.stdout.toString()]).toEqual([0, 'done\n']);
  });

  it('a log path that is the log directory itself, or one above it, is INVALID_ARGUMENT', async () => {
    const pod = await runPod(env);
    for (const log_path of ['.', 'x/..', './', '..', '../..']) {
      const res = await failure(createCtr(env, pod, ctrConfig(`logdir${log_path.length}`, ['true'], { log_path })));
      expect(res.code, log_path).toBe(grpcStatus.INVALID_ARGUMENT);
    }
  });
});
