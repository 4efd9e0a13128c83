// Issue 6 with real containers: CDI devices (a host char device node made with mknod, an extra mount, env)
// visible inside the container; a broken CDI spec file named with its line; idmapped mounts honoured by
// crun in a userns pod and refused for runc 1.1.5 and for a volume on a filesystem that cannot be idmapped.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import type { OciEnv } from '../helpers/containers.js';
import { k129Daemon, destroyK129, restartK129, setupK129Guard, teardownK129, runK129Pod, k129CtrConfig, usernsPodConfig, USERNS_MAPPING } from '../helpers/k129.js';
import { makeScratchDir, runCli } from '../helpers/daemon.js';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig.js';

let env: OciEnv | undefined;
let cdiDir = '';
let cdiLater = '';
let share = '';
let nodePath = '';
let files = '';

beforeAll(async () => {
  setupK129Guard();
  files = await makeScratchDir('sk129-cdi-');
  // a userns pod's root (host uid 100000) walks through here to reach bind-mount sources
  await chmod(files, 0o711);
  cdiDir = join(files, 'cdi');
  cdiLater = join(files, 'cdi-later');
  share = join(files, 'share');
  nodePath = join(files, 'sk129null');
  await mkdir(cdiDir);
  await mkdir(cdiLater);
  await mkdir(share);
  await writeFile(join(share, 'hello'), 'from the CDI mount\n');
  // a /dev/null-like node of our own: same numbers, a path nothing else uses
  execFileSync('mknod', ['-m', '0666', nodePath, 'c', '1', '3']);
  await writeFile(
    join(cdiDir, 'k129.yaml'),
    [
      'cdiVersion: "0.6.0"',
      'kind: "skiff.test/k129"',
      'devices:',
      '  - name: null0',
      '    containerEdits:',
      '      env: ["SK129_DEV=null0"]',
      '      deviceNodes:',
      '        - path: /dev/sk129null',
      `          hostPath: ${nodePath}`,
      'containerEdits:',
      '  env: ["SK129_CDI=yes"]',
      '  hooks:',
      '    - hookName: createRuntime',
      '      path: /bin/sh',
      `      args: [sh, -c, "cat > ${join(files, 'hook-state')}"]`,
      '  mounts:',
      `    - hostPath: ${share}`,
      '      containerPath: /cdi-share',
      '      options: [ro, bind]',
      '',
    ].join('\n'),
  );
  env = await k129Daemon(`[cdi]\nspec_dirs = ["${cdiDir}", "${cdiLater}"]\n`);
  await chmod(env.dir, 0o711);
});
afterAll(async () => {
  if (env) await destroyK129(env);
  if (files) await rm(files, { recursive: true, force: true });
  await teardownK129();
});

const failure = (p: Promise<unknown>) => p.then(() => ({ code: -1, details: 'succeeded' }), (e: { code: number; details: string }) => e);

async function runCtr(pod: { id: string; config: object }, config: ContainerConfig): Promise<string> {
  const e = env!;
  const id = (await runtimeCall(e.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config })).container_id;
  await runtimeCall(e.d.client, 'StartContainer', { container_id: id });
  return id;
}

async function sh(id: string, script: string): Promise<{ out: string; err: string; code: number }> {
  const r = await runtimeCall(env!.d.client, 'ExecSync', { container_id: id, cmd: ['sh', '-c', script], timeout: 20 }, 60_000);
  return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exit_code };
}

describe('CDI devices', () => {
  it('puts the device node, mount, env and hook of a CDI spec into the container (CDI_devices and annotation)', async () => {
    const pod = await runK129Pod(env!);
    const viaField = await runCtr(pod, k129CtrConfig('cdi', ['sleep', '1000'], { CDI_devices: [{ name: 'skiff.test/k129=null0' }] }));
    const viaAnnotation = await runCtr(pod, k129CtrConfig('cdi-ann', ['sleep', '1000'], { annotations: { 'cdi.k8s.io/k129-test': 'skiff.test/k129=null0' } }));
    for (const id of [viaField, viaAnnotation]) {
      const r = await sh(id, 'stat -c "%F %t:%T" /dev/sk129null; echo "$SK129_CDI $SK129_DEV"; cat /cdi-share/hello; echo x > /dev/sk129null && echo wrote; touch /cdi-share/new 2>/dev/null || echo read-only');
      expect(r.err).toBe('');
      expect(r.out.split('\n')).toEqual(['character special file 1:3', 'yes null0', 'from the CDI mount', 'wrote', 'read-only', '']);
    }
    // the spec's hook ran on the host with the container's state on stdin
    const state = JSON.parse(await readFile(join(files, 'hook-state'), 'utf8')) as { id: string; status: string };
    expect([viaField, viaAnnotation]).toContain(state.id);
    // inspect (verbose status) names them
    const info = JSON.parse((await runtimeCall(env!.d.client, 'ContainerStatus', { container_id: viaField, verbose: true })).info.info) as Record<string, unknown>;
    expect(info.cdiDevices).toEqual({ requested: ['skiff.test/k129=null0'], deviceNodes: ['/dev/sk129null'] });
    const cli = await runCli(['-r', env!.d.socket, 'inspect', viaField]);
    expect(cli.code, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as { info: Record<string, unknown> }).info.cdiDevices).toEqual(info.cdiDevices);
    // a container without CDI devices has none of it
    const plain = await runCtr(pod, k129CtrConfig('plain', ['sleep', '1000']));
    expect((await sh(plain, 'ls /dev/sk129null /cdi-share 2>&1; echo "[$SK129_CDI]"')).out).toMatch(/No such file[\s\S]*No such file[\s\S]*\[\]/);
  });

  it('fails CreateContainer naming an unknown device, and names the file and line of a broken spec file', async () => {
    const pod = await runK129Pod(env!);
    const create = (device: string) =>
      failure(runtimeCall(env!.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config: k129CtrConfig('bad', ['true'], { CDI_devices: [{ name: device }] }), sandbox_config: pod.config }));
    const unknown = await create('skiff.test/k129=nope');
    expect(unknown.code).toBe(status.FAILED_PRECONDITION);
    expect(unknown.details).toContain('"skiff.test/k129=nope"');

    // a syntax error: line 5 is indented under neither the list item nor its map
    const broken = join(cdiLater, 'broken.yaml');
    await writeFile(broken, 'cdiVersion: "0.6.0"\nkind: "skiff.test/broken"\ndevices:\n  - name: x\n   containerEdits: {}\n  - name: y\n');
    const r = await create('skiff.test/broken=x');
    expect(r.code).toBe(status.FAILED_PRECONDITION);
    expect(r.details).toContain('unresolvable CDI device "skiff.test/broken=x"');
    expect(r.details).toContain(`${broken}:5: invalid YAML`);
    // a well-formed file with an invalid device name on line 4
    const badName = join(cdiDir, 'badname.json');
    await writeFile(badName, '{\n  "cdiVersion": "0.6.0",\n  "kind": "skiff.test/badname",\n  "devices": [{ "name": "bad name!",\n    "containerEdits": { "env": ["A=1"] } }]\n}\n');
    const r2 = await create('skiff.test/badname=x');
    expect(r2.code).toBe(status.FAILED_PRECONDITION);
    expect(r2.details).toContain(`${badName}:4: invalid device name "bad name!"`);
    // the broken file hides nothing else
    const ok = await runCtr(pod, k129CtrConfig('still-ok', ['sleep', '1000'], { CDI_devices: [{ name: 'skiff.test/k129=null0' }] }));
    expect((await sh(ok, 'echo $SK129_DEV')).out).toBe('null0\n');
    // a failed create leaves nothing behind
    const list = await runtimeCall(env!.d.client, 'ListContainers', { filter: { pod_sandbox_id: pod.id } });
    expect(list.containers.map((c) => c.metadata?.name)).toEqual(['still-ok']);
  });
});

describe('idmapped mounts in a user-namespace pod', () => {
  let vol = '';
  beforeAll(async () => {
    vol = join(env!.dir, 'vol');
    await mkdir(vol);
    await writeFile(join(vol, 'owned-by-1000'), 'x');
    await chown(join(vol, 'owned-by-1000'), 1000, 1000);
  });

  const mapped = (host: string) => ({
    container_path: '/data',
    host_path: host,
    uidMappings: USERNS_MAPPING,
    gidMappings: USERNS_MAPPING,
  });

  it('crun: a host file owned by 1000 is seen as 1000 inside a pod mapped to 100000+', async () => {
    const pod = await runK129Pod(env!, usernsPodConfig(env!), 'crun');
    const id = await runCtr(pod, k129CtrConfig('idmap', ['sleep', '1000'], { mounts: [mapped(vol)] }));
    const r = await sh(id, 'cat /proc/self/uid_map /proc/self/gid_map; stat -c "%u:%g" /data/owned-by-1000; id -u; hostname');
    expect(r.err).toBe('');
    const lines = r.out.trim().split('\n').map((l) => l.trim().split(/\s+/).join(' '));
    expect(lines).toEqual(['0 100000 65536', '0 100000 65536', '1000:1000', '0', pod.config.hostname]);
    const info = JSON.parse((await runtimeCall(env!.d.client, 'ContainerStatus', { container_id: id, verbose: true })).info.info) as Record<string, unknown>;
    const ociMap = [{ containerID: 0, hostID: 100000, size: 65536 }];
    expect(info.userNamespace).toEqual({ uidMappings: ociMap, gidMappings: ociMap });
    expect(info.idmappedMounts).toEqual([{ containerPath: '/data', hostPath: vol, uidMappings: ociMap, gidMappings: ociMap }]);
    const cli = await runCli(['-r', env!.d.socket, 'inspect', id]);
    expect(cli.code, cli.stderr).toBe(0);
    const shown = (JSON.parse(cli.stdout) as { info: Record<string, unknown> }).info;
    expect([shown.idmappedMounts, shown.userNamespace]).toEqual([info.idmappedMounts, info.userNamespace]);
    // the control: the same volume without mappings shows the host owner as unmapped (nobody)
    const plain = await runCtr(pod, k129CtrConfig('no-idmap', ['sleep', '1000'], { mounts: [{ container_path: '/data', host_path: vol }] }));
    expect((await sh(plain, 'stat -c "%u:%g" /data/owned-by-1000')).out).toBe('65534:65534\n');
    // a daemon restart keeps the pod (its user namespace pin included) and the container usable
    await restartK129(env!);
    expect((await runtimeCall(env!.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id })).status!.state).toBe('SANDBOX_READY');
    expect((await sh(id, 'stat -c "%u:%g" /data/owned-by-1000; cat /proc/self/uid_map')).out.split('\n')[0]).toBe('1000:1000');
    // the pod's pinned user namespace goes with the pod
    const podInfo = JSON.parse((await runtimeCall(env!.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id, verbose: true })).info.info) as { namespaces: { user?: string } };
    expect(podInfo.namespaces.user).toMatch(/\/ns\/user$/);
    await runtimeCall(env!.d.client, 'StopPodSandbox', { pod_sandbox_id: pod.id });
    await runtimeCall(env!.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(pod.id);
  });

  it('runc 1.1.5 (ignores mount idmaps): refused with FAILED_PRECONDITION naming the handler', async () => {
    const pod = await runK129Pod(env!, usernsPodConfig(env!), 'runc');
    const r = await failure(runtimeCall(env!.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config: k129CtrConfig('idmap-runc', ['true'], { mounts: [mapped(vol)] }), sandbox_config: pod.config }));
    expect(r.code).toBe(status.FAILED_PRECONDITION);
    expect(r.details).toContain('runtime handler "runc" cannot do idmapped mounts');
    expect(r.details).toContain('/data');
    const list = await runtimeCall(env!.d.client, 'ListContainers', { filter: { pod_sandbox_id: pod.id } });
    expect(list.containers).toEqual([]);
  });

  it('runc runs a userns pod\'s container (pod PID namespace too) in the pod\'s mappings when no mount asks for idmapping', async () => {
    const config = usernsPodConfig(env!);
    config.linux!.security_context!.namespace_options!.pid = 'POD';
    const pod = await runK129Pod(env!, config, 'runc');
    const id = await runCtr(
      pod,
      k129CtrConfig('userns-runc', ['sleep', '1000'], {
        mounts: [{ container_path: '/data', host_path: vol }],
        linux: { security_context: { namespace_options: { pid: 'POD' } } },
      }),
    );
    const r = await sh(id, 'cat /proc/self/uid_map; stat -c "%u" /data/owned-by-1000; hostname; cat /proc/1/comm');
    expect(r.out.split('\n').map((l) => l.trim().split(/\s+/).join(' '))).toEqual(['0 100000 65536', '65534', pod.config.hostname, 'catatonit', '']);
  });

  it('a volume on a filesystem that cannot be idmapped: refused naming its path and filesystem type', async () => {
    const pod = await runK129Pod(env!, usernsPodConfig(env!), 'crun');
    const r = await failure(
      runtimeCall(env!.d.client, 'CreateContainer', { pod_sandbox_id: pod.id, config: k129CtrConfig('idmap-sysfs', ['true'], { mounts: [mapped('/sys/kernel')] }), sandbox_config: pod.config }),
    );
    expect(r.code).toBe(status.FAILED_PRECONDITION);
    expect(r.details).toContain('/sys/kernel');
    expect(r.details).toContain('sysfs');
  });
});
