// Issue 2: the daemon's spine, against a real daemon and a real gRPC client.
import { describe, it, expect } from 'vitest';
import { stat, writeFile, mkdir, readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startDaemon, runCli, makeScratchDir, daemonsPerTest } from '../helpers/daemon.js';
import { runtimeCall, imageCall } from '../../src/cli/client.js';
import { SKIFF_VERSION } from '../../src/version.js';

const daemon = daemonsPerTest();

function grpcCodeOf(p: Promise<unknown>): Promise<number> {
  return p.then(
    () => -1,
    (e: { code: number }) => e.code,
  );
}

describe('skiff daemon: runtime info', () => {
  it('answers Version with the package version', async () => {
    const d = await daemon();
    const v = await runtimeCall(d.client, 'Version', { version: 'v1' });
    expect(v.runtime_name).toBe('skiff');
    expect(v.runtime_version).toBe(SKIFF_VERSION);
    expect(v.runtime_api_version).toBe('v1');
  });

  it('computes Status conditions from the machine: CNI config present or not', async () => {
    const dir = await makeScratchDir();
    const cniDir = join(dir, 'net.d');
    const d = await daemon({ dir, config: `[cni]\nconf_dir = "${cniDir}"\n` });
    let s = await runtimeCall(d.client, 'Status', { verbose: false });
    const net = s.status!.conditions.find((c) => c.type === 'NetworkReady')!;
    expect(net.status).toBe(false);
    expect(net.message).toContain(cniDir);
    expect(s.info).toEqual({});
    await mkdir(cniDir, { recursive: true });
    await writeFile(join(cniDir, '10-test.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 't', plugins: [{ type: 'loopback' }] }));
    s = await runtimeCall(d.client, 'Status', { verbose: true });
    expect(s.status!.conditions.find((c) => c.type === 'NetworkReady')!.status).toBe(true);
    expect(JSON.parse(s.info.config)).toMatchObject({ cni: { confDir: cniDir }, defaultRuntime: 'runc' });
  });

  it('reports RuntimeReady=false when the default runtime binary is missing', async () => {
    const d = await daemon({ config: 'default_runtime = "ghost"\n[runtimes.ghost]\npath = "/nonexistent/ghost-runtime"\n' });
    const s = await runtimeCall(d.client, 'Status', {});
    const rt = s.status!.conditions.find((c) => c.type === 'RuntimeReady')!;
    expect(rt.status).toBe(false);
    expect(rt.message).toContain('/nonexistent/ghost-runtime');
  });

  it('reports the configured cgroup driver in RuntimeConfig', async () => {
    const d = await daemon();
    const r = await runtimeCall(d.client, 'RuntimeConfig', {});
    expect(r.linux?.cgroup_driver).toBe('CGROUPFS');
  });

  it('keeps the pod CIDR from UpdateRuntimeConfig across a restart, and rejects a bad one', async () => {
    const dir = await makeScratchDir();
    let d = await startDaemon({ dir });
    await runtimeCall(d.client, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.244.1.0/24' } } });
    expect(await grpcCodeOf(runtimeCall(d.client, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: 'nonsense' } } }))).toBe(
      status.INVALID_ARGUMENT,
    );
    await d.cleanup();
    d = await daemon({ dir });
    const s = await runtimeCall(d.client, 'Status', { verbose: true });
    expect(JSON.parse(s.info.config).podCidrs).toEqual(['10.244.1.0/24']);
  });

  it('starts with a damaged network-settings.json: moved aside, no pod CIDRs until kubelet sends them again', async () => {
    const dir = await makeScratchDir();
    await mkdir(join(dir, 'state'), { recursive: true });
    await writeFile(join(dir, 'state', 'network-settings.json'), '{"podCidrs": ["10.2');
    const d = await daemon({ dir });
    let s = await runtimeCall(d.client, 'Status', { verbose: true });
    expect(JSON.parse(s.info.config).podCidrs).toEqual([]);
    expect((await readdir(join(dir, 'state'))).some((f) => f.startsWith('network-settings.json.damaged.'))).toBe(true);
    await runtimeCall(d.client, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.244.2.0/24' } } });
    s = await runtimeCall(d.client, 'Status', { verbose: true });
    expect(JSON.parse(s.info.config).podCidrs).toEqual(['10.244.2.0/24']);
  });
});

describe('skiff daemon: socket and lifecycle', () => {
  it('creates the socket with mode 0660', async () => {
    const d = await daemon();
    const st = await stat(d.socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
  });

  it('refuses to start on a socket another daemon is serving', async () => {
    const d = await daemon();
    const second = await daemon({ args: ['--socket', d.socket], noWait: true });
    expect(await second.exited).not.toBe(0);
    expect(second.logs()).toContain('another daemon is already serving');
    // the first one is untouched
    expect((await runtimeCall(d.client, 'Version', {})).runtime_name).toBe('skiff');
  });

  it('replaces a stale socket left by a crash', async () => {
    const dir = await makeScratchDir();
    const stale = join(dir, 's.sock');
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(stale, r));
    // Simulate a crash: the socket file stays but nobody listens.
    (srv as unknown as { _handle: { close(): void } | null })._handle?.close();
    const d = await daemon({ dir });
    expect((await runtimeCall(d.client, 'Version', {})).runtime_name).toBe('skiff');
  });

  it('shuts down cleanly on SIGTERM and removes its socket', async () => {
    const d = await daemon();
    expect(await d.stop('SIGTERM')).toBe(0);
    await expect(stat(d.socket)).rejects.toThrow(/ENOENT/);
    expect(d.logs()).toContain('stopped');
  });

  it('answers UNIMPLEMENTED naming the method for rpcs not built yet', async () => {
    const d = await daemon();
    const err = await runtimeCall(d.client, 'CheckpointContainer', { container_id: 'x' }).catch((e: { code: number; details: string }) => e);
    expect(err).toMatchObject({ code: status.UNIMPLEMENTED });
    expect((err as { details: string }).details).toContain('CheckpointContainer');
  });
});

describe('skiff daemon: configuration', () => {
  it('stops start-up on an unknown key, naming the key and the file', async () => {
    const d = await daemon({ config: '[cni]\nconf_dri = "/x"\n', noWait: true });
    expect(await d.exited).toBe(1);
    expect(d.logs()).toContain('cni.conf_dri: unknown key');
    expect(d.logs()).toContain(d.configFile);
  });

  it('stops start-up on a bad value', async () => {
    const d = await daemon({ config: 'cgroup_driver = "cgroupv3"\n', noWait: true });
    expect(await d.exited).toBe(1);
    expect(d.logs()).toMatch(/cgroup_driver: must be one of cgroupfs, systemd/);
  });

  it('refuses the systemd cgroup driver when systemd is not running', async () => {
    const d = await daemon({ config: 'cgroup_driver = "systemd"\n', noWait: true });
    const code = await Promise.race([d.exited, new Promise((r) => setTimeout(() => r('running'), 3000))]);
    // On a systemd host the daemon legitimately starts; here (no systemd) it must refuse.
    const { access } = await import('node:fs/promises');
    const systemd = await access('/run/systemd/system').then(() => true, () => false);
    if (systemd) expect(code).toBe('running');
    else {
      expect(code).toBe(1);
      expect(d.logs()).toContain('systemd is not running');
    }
  });
});

describe('skiff client', () => {
  it('prints version, info and runtime-config in table, json and yaml', async () => {
    const d = await daemon();
    const r = ['-r', d.socket];
    const v = await runCli([...r, 'version']);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('RuntimeName:  skiff');
    const j = await runCli([...r, 'version', '-o', 'json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ runtimeName: 'skiff', runtimeApiVersion: 'v1' });
    const info = await runCli([...r, 'info']);
    expect(JSON.parse(info.stdout).status.conditions).toHaveLength(2);
    const rc = await runCli(['runtime-config', '-o', 'yaml'], { CONTAINER_RUNTIME_ENDPOINT: `unix://${d.socket}` });
    expect(rc.stdout).toContain('cgroupDriver: CGROUPFS');
  });

  it('fails clearly when nothing listens on the endpoint', async () => {
    const res = await runCli(['-r', '/nonexistent/skiff.sock', '-t', '1s', 'version']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/rpc error: code = (UNAVAILABLE|DEADLINE_EXCEEDED)/);
  });
});

describe('ImageService is bound', () => {
  it('answers on the image service too', async () => {
    const d = await daemon();
    const code = await grpcCodeOf(imageCall(d.client, 'ImageFsInfo', {}));
    expect([status.UNIMPLEMENTED, -1]).toContain(code);
  });
});
