// Issue 7: Exec, Attach and PortForward against a real daemon with real containers (runc under conmon,
// busybox, a pod on a CNI bridge in 10.91.0.0/16), driven by our SPDY client and by a WebSocket client
// speaking v5.channel.k8s.io.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { PassThrough } from 'node:stream';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import { runRemoteCommand, PortForwardSession, dialSpdy } from '../../src/stream/client.js';
import type { TerminalSize } from '../../src/stream/protocol.js';
import { installGuard, removeGuard, makeNetwork } from '../helpers/cni.js';
import { makeScratchDir, runCli, SKIFF_BIN } from '../helpers/daemon.js';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import * as pty from '@lydell/node-pty';
import { BUSYBOX, CGROUP_TOP, ociDaemon, destroyEnv, ctrConfig, runPod, createCtr, startCtr, ctrStatus, waitExited, exec, podConfig, type OciEnv } from '../helpers/containers.js';
import { WsRemoteCommand } from '../helpers/ws-remotecommand.js';
import { sink, sha, until, roundTrip, wsPortForwardEcho } from '../helpers/stream-io.js';
import { buildGoSpdyClient, runGoSpdyClient } from '../helpers/go-spdy.js';
import { loadBusybox } from '../helpers/registry.js';
import { removeCgroupTree } from '../helpers/cgroups.js';
import { parseErrorStream } from '../../src/stream/protocol.js';

const GUARD = 'SKIFF-STR-GUARD';
const NET16 = '10.91';
/** Short, so the expiry test need not wait long; every other test uses its URL at once. */
const TOKEN_TTL_SECONDS = 3;

let env: OciEnv;
let pod: { id: string; config: object };
let sleeper: string;
let ticker: string;

const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

async function execUrl(id: string, cmd: string[], o: { tty?: boolean; stdin?: boolean } = {}): Promise<string> {
  const tty = o.tty ?? false;
  return (await runtimeCall(env.d.client, 'Exec', { container_id: id, cmd, tty, stdin: o.stdin ?? true, stdout: true, stderr: !tty })).url;
}

const ids = new Map<string, string>();
const ctrIdByName = (name: string): string => ids.get(name)!;

async function running(name: string, command: string[], over: object = {}): Promise<string> {
  const id = await createCtr(env, pod, ctrConfig(name, command, over));
  ids.set(name, id);
  await startCtr(env, id);
  return id;
}

beforeAll(async () => {
  installGuard(GUARD, `${NET16}.0.0/16`);
  const dir = await makeScratchDir('skstr-');
  const net = await makeNetwork(dir, { prefix: 'skstr', net16: NET16 });
  env = await ociDaemon({ dir, net, extraConfig: `[streaming]\ntoken_ttl_seconds = ${TOKEN_TTL_SECONDS}\n` });
  pod = await runPod(env, podConfig(env));
  sleeper = await running('sleeper', ['sleep', '3600']);
  ticker = await running('ticker', ['sh', '-c', 'i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done']);
  // an echo server: each connection gets a `cat` of its own (busybox nc resets some connections when
  // several arrive at once, so concurrency is tested against httpd below)
  await running('echoer', ['nc', '-ll', '-p', '8080', '-e', 'cat']);
  // a forking web server with a 64 KiB random file
  await running('web', ['sh', '-c', 'mkdir -p /www && head -c 65536 /dev/urandom >/www/f && exec busybox httpd -f -p 8081 -h /www']);
});

afterAll(async () => {
  if (env) await destroyEnv(env);
  removeGuard(GUARD);
  await removeCgroupTree(CGROUP_TOP);
});

describe('exec over SPDY (our client)', () => {
  it('an interactive shell through a tty: echo, resize, exit code', async () => {
    const url = await execUrl(sleeper, ['sh'], { tty: true });
    const stdin = new PassThrough();
    const stdout = sink();
    const resize = new EventEmitter<{ resize: [TerminalSize] }>();
    const done = runRemoteCommand(url, { stdin, stdout, tty: true, resize, initialSize: { width: 91, height: 31 } });
    stdin.write('echo $((6*7))x\n');
    await until(() => stdout.text().includes('42x'), 'the shell to answer');
    expect(stdout.text()).toContain('echo $((6*7))x'); // the terminal echoed our typing
    stdin.write('busybox stty size\n');
    await until(() => stdout.text().includes('31 91'), 'the initial size');
    resize.emit('resize', { width: 120, height: 40 });
    await new Promise((r) => setTimeout(r, 300));
    stdin.write('busybox stty size\n');
    await until(() => stdout.text().includes('40 120'), 'the new size');
    stdin.write('exit 3\n');
    expect(await done).toBe(3);
  });

  it('exit code 7 arrives as 7; stdin EOF reaches the process; stdout and stderr apart', async () => {
    const url = await execUrl(sleeper, ['sh', '-c', 'cat; echo oops >&2; exit 7']);
    const stdin = new PassThrough();
    stdin.end('hello from stdin\n');
    const stdout = sink();
    const stderr = sink();
    expect(await runRemoteCommand(url, { stdin, stdout, stderr, tty: false })).toBe(7);
    expect(stdout.text()).toBe('hello from stdin\n');
    expect(stderr.text()).toBe('oops\n');
  });

  it('stdin EOF through a tty ends the reading process', async () => {
    const url = await execUrl(sleeper, ['sh', '-c', 'cat >/tmp/got; echo read-$(cat /tmp/got | wc -c)-bytes'], { tty: true });
    const stdin = new PassThrough();
    const stdout = sink();
    const done = runRemoteCommand(url, { stdin, stdout, tty: true });
    stdin.end('abc\n');
    expect(await done).toBe(0);
    expect(stdout.text()).toMatch(/read-4-bytes/);
  });

  it('moves 20 MiB each way without stalling at 64 KiB', async () => {
    const payload = randomBytes(20 * 1024 * 1024);
    const url = await execUrl(sleeper, ['cat']);
    const stdin = new PassThrough();
    stdin.end(payload);
    const stdout = sink();
    expect(await runRemoteCommand(url, { stdin, stdout, stderr: sink(), tty: false })).toBe(0);
    expect(stdout.bytes().length).toBe(payload.length);
    expect(sha(stdout.bytes())).toBe(sha(payload));
  });

  it('the exec’d process is killed when the client goes away', async () => {
    const url = await execUrl(sleeper, ['sh', '-c', 'echo started; exec sleep 777'], { stdin: false });
    const { conn } = await dialSpdy(url, ['v4.channel.k8s.io']);
    const err = conn.createStream({ streamtype: ['error'] });
    const out = conn.createStream({ streamtype: ['stdout'] });
    const errs = conn.createStream({ streamtype: ['stderr'] });
    for (const s of [err, out, errs]) s.on('error', () => undefined);
    let seen = '';
    out.on('data', (d: Buffer) => (seen += d.toString()));
    await until(() => seen.includes('started'), 'the command to start');
    const ps = async (): Promise<string> => (await exec(env, sleeper, ['ps', '-o', 'args'])).stdout.toString();
    expect(await ps()).toContain('sleep 777');
    conn.destroy();
    await until(async () => !(await ps()).includes('sleep 777'), 'the process to be killed');
  });
});

describe('exec over WebSocket v5.channel.k8s.io', () => {
  it('stdin close signal, exit code 7, stdout and stderr channels', async () => {
    const c = new WsRemoteCommand(await execUrl(sleeper, ['sh', '-c', 'cat; echo oops >&2; exit 7']));
    await c.opened;
    expect(c.ws.protocol).toBe('v5.channel.k8s.io');
    c.write('over websocket\n');
    c.closeStdin();
    const out = await c.done;
    expect(out.stdout.toString()).toBe('over websocket\n');
    expect(out.stderr.toString()).toBe('oops\n');
    expect(out.exitCode).toBe(7);
  });

  it('an interactive shell through a tty, with resize', async () => {
    const c = new WsRemoteCommand(await execUrl(sleeper, ['sh'], { tty: true }));
    await c.opened;
    c.resize(77, 22);
    c.write('echo $((5+5))y\n');
    await c.waitForOutput('10y');
    c.write('busybox stty size\n');
    await c.waitForOutput('22 77');
    c.write('exit 0\n');
    expect((await c.done).exitCode).toBe(0);
  });
});

describe("Go's spdystream client (as kubelet/crictl/kubectl) against real containers", () => {
  let goClient: string;
  beforeAll(async () => {
    goClient = await buildGoSpdyClient();
  }, 300_000);

  it('exec: 20 MiB each way through runc, exit code 7 in the Status', async () => {
    const payload = randomBytes(20 * 1024 * 1024);
    const r = await runGoSpdyClient(goClient, ['exec', await execUrl(sleeper, ['sh', '-c', 'cat; exit 7'])], payload);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(r.stdout)).toBe(sha(payload));
    expect(parseErrorStream(r.status, true)).toEqual({ exitCode: 7 });
  });

  it('port-forward: 10 MB each way into the pod', async () => {
    const payload = randomBytes(10 * 1000 * 1000);
    const url = (await runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [8080] })).url;
    const r = await runGoSpdyClient(goClient, ['pf', url, '8080'], payload);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(r.stdout)).toBe(sha(payload));
  });
});

describe('exec with crun as the runtime', () => {
  it('tty shell echo and exit code, and piped stdin to EOF', async () => {
    await loadBusybox(env.d, BUSYBOX, 'crun');
    const crunPod = await runPod(env, podConfig(env), 'crun');
    const id = await createCtr(env, crunPod, ctrConfig('crun-sleeper', ['sleep', '3600']));
    await startCtr(env, id);
    const stdin = new PassThrough();
    const stdout = sink();
    const done = runRemoteCommand(await execUrl(id, ['sh'], { tty: true }), { stdin, stdout, tty: true, initialSize: { width: 81, height: 21 } });
    stdin.write('echo $((2*21))c; busybox stty size\n');
    await until(() => stdout.text().includes('42c') && stdout.text().includes('21 81'), 'the shell under crun');
    stdin.write('exit 4\n');
    expect(await done).toBe(4);
    const piped = new PassThrough();
    piped.end('via crun\n');
    const out = sink();
    expect(await runRemoteCommand(await execUrl(id, ['sh', '-c', 'cat; exit 7']), { stdin: piped, stdout: out, stderr: sink(), tty: false })).toBe(7);
    expect(out.text()).toBe('via crun\n');
  });
});

describe('attach', () => {
  it('sees the output of a running container; detaching leaves it running (SPDY and WebSocket)', async () => {
    const url = (await runtimeCall(env.d.client, 'Attach', { container_id: ticker, stdout: true, stderr: true })).url;
    const { conn } = await dialSpdy(url, ['v4.channel.k8s.io']);
    const streams = ['error', 'stdout', 'stderr'].map((t) => conn.createStream({ streamtype: [t] }));
    for (const s of streams) s.on('error', () => undefined);
    let seen = '';
    let seenErr = '';
    streams[1].on('data', (d: Buffer) => (seen += d.toString()));
    streams[2].on('data', (d: Buffer) => (seenErr += d.toString()));
    await until(() => /tick \d+\n[\s\S]*tick \d+\n/.test(seen) && /tock \d+\n/.test(seenErr), 'two ticks and a tock');
    // stdout and stderr stay apart
    expect(seen).not.toContain('tock');
    expect(seenErr).not.toContain('tick');
    conn.destroy();
    await new Promise((r) => setTimeout(r, 500));
    expect((await ctrStatus(env, ticker)).status?.state).toBe('CONTAINER_RUNNING');

    const ws = new WsRemoteCommand((await runtimeCall(env.d.client, 'Attach', { container_id: ticker, stdout: true, stderr: true })).url);
    await ws.opened;
    await ws.waitForOutput(/tick \d+\n/);
    ws.ws.close();
    await new Promise((r) => setTimeout(r, 300));
    expect((await ctrStatus(env, ticker)).status?.state).toBe('CONTAINER_RUNNING');
  });

  it('sends stdin to the container, and stdin EOF closes its stdin', async () => {
    const id = await running('reader', ['sh', '-c', 'while read l; do echo got:$l; done; echo stdin-closed'], { stdin: true, stdin_once: true });
    const url = (await runtimeCall(env.d.client, 'Attach', { container_id: id, stdin: true, stdout: true, stderr: true })).url;
    const stdin = new PassThrough();
    const stdout = sink();
    const done = runRemoteCommand(url, { stdin, stdout, stderr: sink(), tty: false });
    stdin.write('hello\n');
    await until(() => stdout.text().includes('got:hello'), 'the echo');
    stdin.end();
    await until(() => stdout.text().includes('stdin-closed'), 'stdin EOF to reach the container');
    expect(await done).toBe(0);
    expect((await waitExited(env, id)).exit_code).toBe(0);
  });

  it('attach to a tty container: -t required, input echoed by the terminal', async () => {
    const id = await running('tty-shell', ['sh'], { stdin: true, tty: true });
    const bad = runtimeCall(env.d.client, 'Attach', { container_id: id, stdin: true, stdout: true, stderr: true });
    expect(await codeOf(bad)).toBe(grpcStatus.INVALID_ARGUMENT);
    const url = (await runtimeCall(env.d.client, 'Attach', { container_id: id, stdin: true, stdout: true, tty: true })).url;
    const stdin = new PassThrough();
    const stdout = sink();
    const done = runRemoteCommand(url, { stdin, stdout, tty: true, initialSize: { width: 100, height: 50 } });
    stdin.write('echo $((3*3))z\n');
    await until(() => stdout.text().includes('9z'), 'the shell in the container to answer');
    stdin.write('busybox stty size\n');
    await until(() => stdout.text().includes('50 100'), 'the resize via conmon');
    stdin.write('exit 0\n');
    await done;
    expect((await waitExited(env, id)).exit_code).toBe(0);
  });
});

describe('port-forward into the pod', () => {
  it('moves 10 MB each way through the pod’s port over SPDY, bytes checked', async () => {
    const url = (await runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [8080] })).url;
    const session = await PortForwardSession.open(url);
    const payload = randomBytes(10 * 1000 * 1000);
    const back = await roundTrip(session, 8080, payload);
    expect(back.length).toBe(payload.length);
    expect(sha(back)).toBe(sha(payload));
    session.close();
  });

  it('serves many concurrent connections on one session', async () => {
    const url = (await runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [8081] })).url;
    const session = await PortForwardSession.open(url);
    const want = (await exec(env, ctrIdByName('web'), ['busybox', 'sha256sum', '/www/f'])).stdout.toString().split(' ')[0];
    const responses = await Promise.all(Array.from({ length: 12 }, () => roundTrip(session, 8081, Buffer.from('GET /f HTTP/1.0\r\n\r\n'))));
    for (const r of responses) {
      const body = r.subarray(r.indexOf('\r\n\r\n') + 4);
      expect(r.toString('latin1', 0, 12)).toMatch(/^HTTP\/1\.[01] 200/);
      expect(sha(body)).toBe(want);
    }
    session.close();
  });

  it('a closed port gets a clear error', async () => {
    const session = await PortForwardSession.open((await runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [] })).url);
    await expect(roundTrip(session, 9999, Buffer.from('x'))).rejects.toThrow(new RegExp(`error forwarding port 9999 to pod ${pod.id}: .*ECONNREFUSED`));
    session.close();
  });

  it('moves 1 MB each way over WebSocket', async () => {
    const url = (await runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [8080] })).url;
    const payload = randomBytes(1_000_000);
    expect(sha(await wsPortForwardEcho(url, 8080, payload))).toBe(sha(payload));
  });

  it('refuses bad requests with clear errors', async () => {
    expect(await codeOf(runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: pod.id, port: [70000] }))).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(await codeOf(runtimeCall(env.d.client, 'PortForward', { pod_sandbox_id: 'nonexistent', port: [80] }))).toBe(grpcStatus.NOT_FOUND);
  });
});

describe('tokens and errors', () => {
  it('a reused token is refused', async () => {
    const url = await execUrl(sleeper, ['true'], { stdin: false });
    expect(await runRemoteCommand(url, { stdout: sink(), stderr: sink(), tty: false })).toBe(0);
    await expect(runRemoteCommand(url, { stdout: sink(), stderr: sink(), tty: false })).rejects.toThrow(/404.*unknown or expired/);
  });

  it('an expired token is refused', async () => {
    const url = await execUrl(sleeper, ['true'], { stdin: false });
    await new Promise((r) => setTimeout(r, TOKEN_TTL_SECONDS * 1000 + 300));
    await expect(runRemoteCommand(url, { stdout: sink(), stderr: sink(), tty: false })).rejects.toThrow(/404.*unknown or expired/);
    const ws = new WsRemoteCommand(url);
    await expect(ws.opened).rejects.toThrow(/HTTP 404/);
  });

  it('exec into a stopped container gets a clear error', async () => {
    const id = await running('quick', ['true']);
    await waitExited(env, id);
    const err = await runtimeCall(env.d.client, 'Exec', { container_id: id, cmd: ['ls'], stdout: true }).catch((e: { code: number; details: string }) => e);
    expect(err).toMatchObject({ code: grpcStatus.FAILED_PRECONDITION });
    expect((err as { details: string }).details).toMatch(/not running \(state: exited\)/);
    // the container stops after the URL was handed out: the error comes on the stream
    const late = await running('late', ['sleep', '3600']);
    const url = await execUrl(late, ['ls'], { stdin: false });
    await runtimeCall(env.d.client, 'StopContainer', { container_id: late, timeout: 0 });
    await expect(runRemoteCommand(url, { stdout: sink(), stderr: sink(), tty: false })).rejects.toThrow(/container is exited, not running/);
  });

  it('bad exec requests are refused', async () => {
    expect(await codeOf(runtimeCall(env.d.client, 'Exec', { container_id: sleeper, cmd: [], stdout: true }))).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(await codeOf(runtimeCall(env.d.client, 'Exec', { container_id: sleeper, cmd: ['ls'] }))).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(await codeOf(runtimeCall(env.d.client, 'Exec', { container_id: sleeper, cmd: ['ls'], tty: true, stdout: true, stderr: true }))).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(await codeOf(runtimeCall(env.d.client, 'Exec', { container_id: 'nope', cmd: ['ls'], stdout: true }))).toBe(grpcStatus.NOT_FOUND);
  });
});

describe('client verbs (skiff exec -it, attach, port-forward)', () => {
  const cli = (args: string[], input?: string) => runCli(['-r', env.d.socket, ...args], {}, input);

  it('exec -i: stdin to EOF, output, exit code', async () => {
    const r = await cli(['exec', '-i', sleeper, 'sh', '-c', 'cat; echo oops >&2; exit 7'], 'piped in\n');
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('piped in\n');
    expect(r.stderr).toBe('oops\n');
  });

  it('exec -it in a real terminal: raw mode while it runs and restored after, resizes sent', async () => {
    // The CLI runs in a pty of our own; a shell around it records the terminal settings before and after.
    const script = `a=$(stty -g); "${process.execPath}" "${SKIFF_BIN}" -r "${env.d.socket}" exec -it ${sleeper} sh; code=$?; b=$(stty -g); [ "$a" = "$b" ] && echo "RESTORED:$code" || echo "CHANGED:$code"`;
    const term = pty.spawn('/bin/sh', ['-c', script], { cols: 90, rows: 30, encoding: 'utf8' });
    let out = '';
    term.onData((d) => (out += d));
    const exited = new Promise<void>((r) => term.onExit(() => r()));
    await until(() => out.includes('# '), 'the container shell prompt');
    term.write('echo $((6*7))x\r');
    await until(() => out.includes('42x'), 'the shell to answer');
    term.write('busybox stty size\r');
    await until(() => out.includes('30 90'), 'the initial size');
    term.resize(120, 40);
    await new Promise((r) => setTimeout(r, 300));
    term.write('busybox stty size\r');
    await until(() => out.includes('40 120'), 'the resize to arrive');
    term.write('exit 5\r');
    await exited;
    expect(out).toContain('RESTORED:5');
  });

  it('attach prints a running container’s output and leaves it running when interrupted', async () => {
    const p = spawn(process.execPath, [SKIFF_BIN, '-r', env.d.socket, 'attach', ticker], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await until(() => /tick \d+\n/.test(out), 'a tick');
    p.kill('SIGINT');
    await new Promise((r) => p.once('exit', r));
    expect((await ctrStatus(env, ticker)).status?.state).toBe('CONTAINER_RUNNING');
  });

  it('port-forward relays a local port to the pod', async () => {
    const p = spawn(process.execPath, [SKIFF_BIN, '-r', env.d.socket, 'port-forward', pod.id, ':8080'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until(() => /Forwarding from 127\.0\.0\.1:\d+ -> 8080/.test(out), 'the listener');
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(out)![1]);
      const payload = randomBytes(1_000_000);
      const back: Buffer[] = [];
      const s = connect(port, '127.0.0.1');
      s.on('data', (d: Buffer) => back.push(d));
      s.end(payload);
      await new Promise((r) => s.once('close', r));
      expect(sha(Buffer.concat(back))).toBe(sha(payload));
    } finally {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  });
});
