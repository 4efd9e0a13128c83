// Hostile gRPC input against a real daemon: every rpc of both CRI services gets empty requests, absurd
// ids, invalid UTF-8 (raw bytes built with protobufjs, so they really reach the server), huge/negative
// numbers, unknown enum values, 10k-entry maps, near-limit messages and malformed wire bytes. Each must
// end in a sensible gRPC error (never UNKNOWN/INTERNAL, never a hang); afterwards the daemon still answers
// and the pod and image made beforehand are intact.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { status, type Client } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { join } from 'node:path';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { startDaemon, REPO_ROOT, type TestDaemon } from '../helpers/daemon.js';
import { spawn } from 'node:child_process';
import { loadBusybox } from '../helpers/registry.js';
import { removeCgroupTree } from '../helpers/cgroups.js';
import { runtimeCall, imageCall } from '../../src/cli/client.js';
import { PROTO_PATH } from '../../src/cri/proto.js';

const root = new protobuf.Root();
root.loadSync(PROTO_PATH, { keepCase: true });
const type = (n: string) => root.lookupType(`runtime.v1.${n}`);
const SERVICES = { runtime: root.lookupService('runtime.v1.RuntimeService'), image: root.lookupService('runtime.v1.ImageService') };
type Svc = keyof typeof SERVICES;

/** A valid encoding of `obj` as message `t` (unknown enum numbers and any int64 string pass through). */
function enc(t: protobuf.Type, obj: Record<string, unknown>): Buffer {
  return Buffer.from(t.encode(t.fromObject(obj)).finish());
}
/** One length-delimited field carrying raw bytes (a string field with invalid UTF-8, or a sub-message). */
function ld(field: number, bytes: Uint8Array): Buffer {
  return Buffer.from(protobuf.Writer.create().uint32((field << 3) | 2).bytes(bytes).finish());
}
const BAD_UTF8 = Buffer.from([0x61, 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x62]);

const CGROUP_TOP = `/skiff-test-hst-${randomBytes(3).toString('hex')}`;
let d: TestDaemon;
let podId = '';
let imageId = '';
let imageName = '';
let podBefore = '';
let imageBefore = '';
let nowhere = '';

interface Outcome {
  code: status;
  details: string;
  res?: Buffer;
}

function raw(svc: Svc, method: string, buf: Buffer, ms = 5000): Promise<Outcome> {
  const client = (svc === 'runtime' ? d.client.runtime : d.client.image) as unknown as Client;
  const path = `/${SERVICES[svc].fullName.slice(1)}/${method}`;
  return new Promise((res) => {
    client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, buf, { deadline: Date.now() + ms }, (err, r) =>
      res(err ? { code: err.code, details: err.details } : { code: 0, details: '', res: r }),
    );
  });
}

const NEVER = new Set<number>([status.UNKNOWN, status.INTERNAL, status.DEADLINE_EXCEEDED, status.UNAVAILABLE, status.CANCELLED]);
/** Rpcs skiff leaves to the streaming server or does not offer: UNIMPLEMENTED is an honest answer there. */
const UNIMPLEMENTED_OK = new Set(['Exec', 'Attach', 'PortForward', 'CheckpointContainer']);
/** Rpcs for which an empty request is a valid question. */
const EMPTY_OK = new Set([
  'Version', 'ListPodSandbox', 'ListContainers', 'ListContainerStats', 'ListPodSandboxStats', 'UpdateRuntimeConfig', 'Status',
  'ListMetricDescriptors', 'ListPodSandboxMetrics', 'RuntimeConfig', 'ListImages', 'ImageFsInfo',
]);

function sensible(method: string, o: Outcome, okAllowed: boolean, label: string): void {
  const what = `${method} ${label}: code ${o.code} ${o.details}`;
  expect(NEVER.has(o.code), what).toBe(false);
  if (o.code === status.UNIMPLEMENTED) expect(UNIMPLEMENTED_OK.has(method), what).toBe(true);
  if (!okAllowed) expect(o.code, what).not.toBe(status.OK);
}

/** A pull of a well-formed name from a registry that refuses: UNAVAILABLE is the truth there. */
const pullRefused = (method: string, o: Outcome) => method === 'PullImage' && o.code === status.UNAVAILABLE && o.details.includes('ECONNREFUSED');

/** String fields of a message type, one level of sub-messages deep, as paths [field, subfield?]. */
function stringPaths(t: protobuf.Type, depth = 0): string[][] {
  const out: string[][] = [];
  for (const f of t.fieldsArray) {
    f.resolve();
    if (f.map || f.repeated) continue;
    if (f.type === 'string') out.push([f.name]);
    else if (f.resolvedType instanceof protobuf.Type && depth < 1) for (const p of stringPaths(f.resolvedType, depth + 1)) out.push([f.name, ...p]);
  }
  return out;
}

/** Encodes `base` with the string at `path` replaced by raw bytes. */
function withRawString(t: protobuf.Type, base: Record<string, unknown>, path: string[], bytes: Buffer): Buffer {
  const [head, ...rest] = path;
  const f = t.fields[head];
  const without = { ...base };
  delete without[head];
  const inner = rest.length === 0 ? bytes : withRawString(f.resolvedType as protobuf.Type, (base[head] as Record<string, unknown> | undefined) ?? {}, rest, bytes);
  return Buffer.concat([enc(t, without), ld(f.id, inner)]);
}

function setPath(base: Record<string, unknown>, path: string[], v: unknown): Record<string, unknown> {
  const [head, ...rest] = path;
  if (rest.length === 0) return { ...base, [head]: v };
  return { ...base, [head]: setPath((base[head] as Record<string, unknown> | undefined) ?? {}, rest, v) };
}

/** Absurd ids and names. The hex one is a prefix of nothing stored (chosen once the pod and image exist). */
function absurd(method: string): string[] {
  const list = ['x'.repeat(10 * 1024), '../../etc', 'a\0b', 'NOT-hex!', nowhere, '/etc/passwd', ' '];
  // a pull must never leave loopback: give every plausible name a host that refuses
  return method === 'PullImage' ? list.map((s) => `127.0.0.1:9/${s}`) : list;
}

const methods = (svc: Svc) => Object.values(SERVICES[svc].methods).filter((m) => !m.responseStream);

beforeAll(async () => {
  d = await startDaemon({ config: `cgroup_parent = "${CGROUP_TOP}"\n` });
  imageName = await loadBusybox(d);
  imageId = (await imageCall(d.client, 'ImageStatus', { image: { image: imageName } })).image!.id;
  podId = (
    await runtimeCall(d.client, 'RunPodSandbox', {
      config: {
        metadata: { name: 'victim', namespace: 'hst', uid: 'uid-victim', attempt: 0 },
        hostname: 'victim',
        log_directory: join(d.dir, 'logs', 'victim'),
        labels: { keep: 'me' },
        linux: { cgroup_parent: `${CGROUP_TOP}/victim`, security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
      },
    })
  ).pod_sandbox_id;
  const taken = new Set([podId[0], imageId.replace(/^sha256:/, '')[0]]);
  const free = [...'0123456789abcdef'].find((c) => !taken.has(c))!;
  nowhere = free.repeat(12);
  podBefore = await snapshot();
  imageBefore = JSON.stringify(await imageCall(d.client, 'ListImages', {}));
}, 60_000);

afterAll(async () => {
  // HST_DAEMON_LOG=<file>: keep the daemon's log for debugging a failed run
  if (d && process.env.HST_DAEMON_LOG) await writeFile(process.env.HST_DAEMON_LOG, d.logs());
  if (d) {
    const ps = await runtimeCall(d.client, 'ListPodSandbox', {}).catch(() => ({ items: [] }));
    for (const p of ps.items) await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => undefined);
    await d.cleanup();
  }
  await removeCgroupTree(CGROUP_TOP);
});

async function snapshot(): Promise<string> {
  const st = await runtimeCall(d.client, 'PodSandboxStatus', { pod_sandbox_id: podId });
  const { timestamp: _t, ...rest } = st;
  return JSON.stringify(rest);
}

async function intact(): Promise<void> {
  expect((await runtimeCall(d.client, 'Version', {}, 3000)).runtime_name).toBe('skiff');
  expect(await snapshot()).toBe(podBefore);
  expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items.map((p) => p.id)).toContain(podId);
  expect(JSON.stringify(await imageCall(d.client, 'ListImages', {}))).toBe(imageBefore);
  expect(d.proc.exitCode).toBeNull();
}

describe.each(['runtime', 'image'] as const)('%s service: generic hostile input for every rpc', (svc) => {
  it('covers every rpc of the proto', () => {
    expect(methods(svc).length).toBeGreaterThan(svc === 'runtime' ? 25 : 4);
  });

  it.each(methods(svc).map((m) => m.name))('%s', async (name) => {
    const m = SERVICES[svc].methods[name];
    const t = type(m.requestType);
    // empty request
    sensible(name, await raw(svc, name, Buffer.alloc(0)), EMPTY_OK.has(name), 'empty');
    // malformed wire bytes: a length-delimited field claiming more bytes than follow
    const mal = await raw(svc, name, Buffer.from([0x0a, 0xff, 0xff, 0x03, 0x01]));
    expect(mal.code, `${name} malformed: ${mal.details}`).toBe(status.INVALID_ARGUMENT);
    for (const path of stringPaths(t)) {
      // invalid UTF-8 in any string field is refused outright
      const bad = await raw(svc, name, withRawString(t, {}, path, BAD_UTF8));
      expect(bad.code, `${name} ${path.join('.')} invalid utf-8: ${bad.details}`).toBe(status.INVALID_ARGUMENT);
      for (const v of absurd(name)) {
        const o = await raw(svc, name, enc(t, setPath({}, path, v)));
        if (!pullRefused(name, o)) sensible(name, o, true, `${path.join('.')}=${JSON.stringify(v.slice(0, 40))}`);
      }
    }
    // numbers and enums at the top level and one level down
    for (const f of t.fieldsArray) {
      const subs = f.resolvedType instanceof protobuf.Type ? f.resolvedType.fieldsArray.map((s) => [f.name, s] as const) : [];
      for (const [prefix, g] of [...subs, ['', f] as const]) {
        g.resolve();
        const path = prefix ? [prefix, g.name] : [g.name];
        const values: unknown[] = [];
        if (g.resolvedType instanceof protobuf.Enum) values.push(99, -5);
        else if (/int64$/.test(g.type)) values.push(g.type.startsWith('u') ? '18446744073709551615' : '-9223372036854775808', g.type.startsWith('u') ? '0' : '9223372036854775807', -1);
        else if (/int32$/.test(g.type)) values.push(g.type.startsWith('u') ? 4294967295 : -2147483648, 2147483647);
        if (g.map) values.push(Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 'v'.repeat(8)])));
        for (const v of values) sensible(name, await raw(svc, name, enc(t, setPath({}, path, g.repeated && !g.map ? [v] : v))), true, `${path.join('.')}=${typeof v === 'object' ? '10k map' : JSON.stringify(v)}`);
      }
    }
    await intact();
  });
});

describe('targeted hostile requests', () => {
  it('answers absurd fields inside otherwise valid pod and container configs sensibly', async () => {
    const podBase = {
      metadata: { name: 'fz', namespace: 'hst', uid: 'uid-fz', attempt: 0 },
      linux: { cgroup_parent: `${CGROUP_TOP}/fz`, security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    const big = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 'v']));
    const podCases: [string, Record<string, unknown>][] = [
      ['name 10 KB', { metadata: { ...podBase.metadata, name: 'n'.repeat(10240) } }],
      ['name with ../', { metadata: { ...podBase.metadata, name: '../../etc' } }],
      ['name with NUL', { metadata: { ...podBase.metadata, name: 'a\0b' } }],
      ['hostname 10 KB', { hostname: 'h'.repeat(10240) }],
      ['cgroup_parent ../', { linux: { ...podBase.linux, cgroup_parent: '/../../../../sys/fs/cgroup' } }],
      ['cgroup_parent relative', { linux: { ...podBase.linux, cgroup_parent: 'a/../../b' } }],
      ['10k sysctls', { linux: { ...podBase.linux, sysctls: big } }],
      ['sysctl path escape', { linux: { ...podBase.linux, sysctls: { '../../../etc/passwd': 'x' } } }],
      ['10k labels', { labels: big }],
      ['10k dns servers', { dns_config: { servers: Array.from({ length: 10_000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`), searches: [], options: [] } }],
      ['dns search with newline', { dns_config: { servers: ['1.1.1.1'], searches: ['a\nnameserver 6.6.6.6'], options: [] } }],
      ['negative port', { port_mappings: [{ protocol: 'TCP', container_port: -1, host_port: 70000, host_ip: '' }] }],
      ['unknown ns mode', { linux: { ...podBase.linux, security_context: { namespace_options: { network: 99, pid: 99, ipc: 99 } } } }],
      ['run_as_user huge', { linux: { ...podBase.linux, security_context: { ...podBase.linux.security_context, run_as_user: { value: '-1' } } } }],
      ['overhead negative', { linux: { ...podBase.linux, overhead: { cpu_shares: '-5', memory_limit_in_bytes: '-1' } } }],
    ];
    const t = type('RunPodSandboxRequest');
    const got: Record<string, string> = {};
    for (const [label, over] of podCases) {
      const o = await raw('runtime', 'RunPodSandbox', enc(t, { config: { ...podBase, ...over } }), 20_000);
      got[label] = `${status[o.code]} ${o.details.slice(0, 160)}`;
      if (o.code === status.OK) {
        const id = type('RunPodSandboxResponse').decode(o.res!).toJSON().pod_sandbox_id as string;
        await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
      }
    }
    const ctrBase = { metadata: { name: 'fc', attempt: 0 }, image: { image: imageName }, command: ['true'] };
    const ctrCases: [string, Record<string, unknown>][] = [
      ['name with /', { metadata: { name: '../x', attempt: 0 } }],
      ['10k envs', { envs: Array.from({ length: 10_000 }, (_, i) => ({ key: `K${i}`, value: 'v' })) }],
      ['env key with =', { envs: [{ key: 'A=B', value: 'v' }] }],
      ['command 1 MB', { command: ['x'.repeat(1 << 20)] }],
      ['executable 100 KB', { command: ['x'.repeat(100_000)] }],
      ['argument 100 KB', { command: ['sh', '-c', `: ${'x'.repeat(100_000)}`] }],
      ['working_dir relative', { working_dir: 'rel/dir' }],
      ['negative resources', { linux: { resources: { cpu_shares: '-1', memory_limit_in_bytes: '-5', cpu_quota: '-9', cpu_period: '-1', oom_score_adj: '-99999' } } }],
      ['huge resources', { linux: { resources: { cpu_shares: '9223372036854775807', memory_limit_in_bytes: '9223372036854775807', cpu_period: '9223372036854775807' } } }],
      ['cpuset garbage', { linux: { resources: { cpuset_cpus: '0-99999999,../', cpuset_mems: 'x' } } }],
      ['unified escape', { linux: { resources: { unified: { '../../../etc/x': '1' } } } }],
      ['cpu_quota huge', { linux: { resources: { cpu_quota: '-9223372036854775808' } } }],
      ['run_as_user -1', { linux: { security_context: { run_as_user: { value: '-1' } } } }],
      ['unknown capability', { linux: { security_context: { capabilities: { add_capabilities: ['CAP_NOPE', '../x'] } } } }],
      ['devices escape', { devices: [{ host_path: '/dev/../etc/passwd', container_path: '/dev/x', permissions: 'rwm' }] }],
      ['mount container_path /proc/sysrq-trigger', { mounts: [{ host_path: '/dev/null', container_path: '/proc/sysrq-trigger' }] }],
      ['unknown propagation', { mounts: [{ host_path: '/tmp', container_path: '/t', propagation: 99 }] }],
      ['image 10 KB', { image: { image: 'i'.repeat(10240) } }],
      ['image NUL', { image: { image: 'busy\0box' } }],
    ];
    const tc = type('CreateContainerRequest');

    const cgot: Record<string, string> = {};
    for (const [label, over] of ctrCases) {
      const o = await raw('runtime', 'CreateContainer', enc(tc, { pod_sandbox_id: podId, config: { ...ctrBase, ...over } }), 20_000);
      cgot[label] = `${status[o.code]} ${o.details.slice(0, 160)}`;
      if (o.code === status.OK) await runtimeCall(d.client, 'RemoveContainer', { container_id: type('CreateContainerResponse').decode(o.res!).toJSON().container_id as string });
    }
    for (const [k, v] of [...Object.entries(got), ...Object.entries(cgot)]) expect.soft(v, k).toMatch(/^(OK|INVALID_ARGUMENT|NOT_FOUND|FAILED_PRECONDITION|RESOURCE_EXHAUSTED) /);
    await intact();
  });

  it('refuses a message over the 16 MiB limit with RESOURCE_EXHAUSTED and takes one just under it', async () => {
    const t = type('ListPodSandboxRequest');
    const big = 'x'.repeat(16 * 1024 * 1024);
    const over = await raw('runtime', 'ListPodSandbox', enc(t, { filter: { label_selector: { k: big } } }), 15_000);
    expect(over.code, over.details).toBe(status.RESOURCE_EXHAUSTED);
    const under = await raw('runtime', 'ListPodSandbox', enc(t, { filter: { label_selector: { k: big.slice(0, 15 * 1024 * 1024) } } }), 15_000);
    expect(under.code, under.details).toBe(status.OK);
    await intact();
  });

  it('survives deeply nested unknown fields', async () => {
    // 10k levels of an unknown sub-message (field 99): decoders that recurse on skip must not blow the stack
    let inner: Buffer = Buffer.alloc(0);
    for (let i = 0; i < 10_000; i++) inner = ld(99, inner);
    const o = await raw('runtime', 'Version', inner);
    expect(NEVER.has(o.code), o.details).toBe(false);
    await intact();
  });

  it('refuses RunPodSandbox without metadata, with an empty name or a relative log directory', async () => {
    const base = {
      metadata: { name: 'hostile', namespace: 'hst', uid: 'uid-h', attempt: 0 },
      linux: { cgroup_parent: `${CGROUP_TOP}/h`, security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    const t = type('RunPodSandboxRequest');
    const cases: [string, Record<string, unknown>][] = [
      ['no metadata', { ...base, metadata: undefined }],
      ['empty name', { ...base, metadata: { ...base.metadata, name: '' } }],
      ['relative log dir', { ...base, log_directory: 'logs/here' }],
      ['unknown runtime handler', { ...base }],
    ];
    const got: Record<string, string> = {};
    for (const [label, config] of cases) {
      const o = await raw('runtime', 'RunPodSandbox', enc(t, { config, runtime_handler: label === 'unknown runtime handler' ? '../../bin/sh' : '' }));
      got[label] = `${status[o.code]} ${o.details}`;
    }
    for (const [label] of cases) expect(got[label], label).toMatch(/^INVALID_ARGUMENT /);
    expect((await runtimeCall(d.client, 'ListPodSandbox', {})).items.map((p) => p.id)).toEqual([podId]);
    await intact();
  });

  it('takes any absolute log directory, as containerd and CRI-O do, and never touches it on removal', async () => {
    // the kubelet owns log_directory (/var/log/pods/...); the runtime neither polices nor deletes it
    const before = (await readdir('/etc')).sort();
    for (const logDir of ['/etc', `${d.dir}/../../etc`]) {
      const id = (
        await runtimeCall(d.client, 'RunPodSandbox', {
          config: {
            metadata: { name: `logdir-${before.length}-${logDir.length}`, namespace: 'hst', uid: `u-${logDir.length}`, attempt: 0 },
            log_directory: logDir,
            linux: { cgroup_parent: `${CGROUP_TOP}/ld${logDir.length}`, security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
          },
        })
      ).pod_sandbox_id;
      await runtimeCall(d.client, 'StopPodSandbox', { pod_sandbox_id: id });
      await runtimeCall(d.client, 'RemovePodSandbox', { pod_sandbox_id: id });
    }
    expect((await readdir('/etc')).sort()).toEqual(before);
    await intact();
  });

  it('refuses CreateContainer with dangerous mounts or an escaping log path', async () => {
    const good = { metadata: { name: 'c', attempt: 0 }, image: { image: imageName }, command: ['true'], log_path: 'c.log' };
    const t = type('CreateContainerRequest');
    const cases: [string, Record<string, unknown>][] = [
      ['no metadata', { ...good, metadata: undefined }],
      ['no image', { ...good, image: undefined }],
      ['sysrq-trigger mount', { ...good, mounts: [{ host_path: '/proc/sysrq-trigger', container_path: '/trigger' }] }],
      ['relative container path', { ...good, mounts: [{ host_path: '/tmp', container_path: 'rel' }] }],
    ];
    const got: Record<string, string> = {};
    for (const [label, config] of cases) {
      const o = await raw('runtime', 'CreateContainer', enc(t, { pod_sandbox_id: podId, config }));
      got[label] = `${status[o.code]} ${o.details}`;
      if (o.code === status.OK) await runtimeCall(d.client, 'RemoveContainer', { container_id: type('CreateContainerResponse').decode(o.res!).toJSON().container_id as string });
    }
    for (const [label] of cases) expect(got[label], label).toMatch(/^INVALID_ARGUMENT /);
    expect((await runtimeCall(d.client, 'ListContainers', {})).containers).toEqual([]);
    await intact();
  });

  it('takes host paths with .. and log paths that climb out, as containerd and CRI-O do (the kubelet validates those)', async () => {
    const logDir = join(d.dir, 'logs', 'victim');
    const cases: [Record<string, unknown>, string][] = [
      [{ mounts: [{ host_path: `${d.dir}/../../etc`, container_path: '/x', readonly: true }] }, join(logDir, 'c.log')],
      [{ log_path: '../escape/c.log' }, join(d.dir, 'logs', 'escape', 'c.log')],
      // joined, not taken as absolute: it stays below the pod's log directory
      [{ log_path: '/etc/evil.log' }, join(logDir, 'etc', 'evil.log')],
    ];
    for (const [over, wantLog] of cases) {
      const config = { metadata: { name: 'c', attempt: 0 }, image: { image: imageName }, command: ['true'], log_path: 'c.log', ...over };
      const id = (await runtimeCall(d.client, 'CreateContainer', { pod_sandbox_id: podId, config, sandbox_config: null })).container_id;
      const st = (await runtimeCall(d.client, 'ContainerStatus', { container_id: id })).status!;
      expect(st.log_path).toBe(wantLog);
      await runtimeCall(d.client, 'RemoveContainer', { container_id: id });
    }
    await expect(readFile('/etc/evil.log')).rejects.toThrow();
    expect((await runtimeCall(d.client, 'ListContainers', {})).containers).toEqual([]);
    await intact();
  });

  it('survives 200 concurrent calls from a client killed mid-way', async () => {
    // a separate process, so the connection really drops with calls in flight (no orderly close)
    const script = `
      const { connect, runtimeCall, imageCall } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/cli/client.js'))});
      const c = connect(${JSON.stringify(d.socket)}, 30000);
      for (let i = 0; i < 200; i++) {
        const p = i % 4 === 0 ? runtimeCall(c, 'ListPodSandbox', {})
          : i % 4 === 1 ? runtimeCall(c, 'PodSandboxStatus', { pod_sandbox_id: ${JSON.stringify(podId)}, verbose: true })
          : i % 4 === 2 ? imageCall(c, 'ImageStatus', { image: { image: ${JSON.stringify(imageName)} }, verbose: true })
          : runtimeCall(c, 'Status', { verbose: true });
        p.catch(() => undefined);
      }
      const ev = c.runtime.GetContainerEvents({}); ev.on('error', () => undefined); ev.on('data', () => undefined);
      console.log('sent');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    await new Promise((r) => setTimeout(r, 30));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // the daemon answers at once and keeps answering
    const t = Date.now();
    await intact();
    expect(Date.now() - t).toBeLessThan(3000);
    await new Promise((r) => setTimeout(r, 500));
    await intact();
  });
});
