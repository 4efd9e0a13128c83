// The streaming server's protocols end to end over real loopback sockets: our SPDY client and a WebSocket
// client against StreamingServer, with host processes standing in for containers (the container side is
// covered by test/integration/streaming.test.ts against a real daemon).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { PassThrough } from 'node:stream';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type AddressInfo, type Socket } from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import { StreamingServer } from '../../src/stream/server.js';
import { runRemoteCommand, PortForwardSession, dialSpdy, StreamingError } from '../../src/stream/client.js';
import { REMOTECOMMAND_V1, REMOTECOMMAND_V2, parseErrorStream, type TerminalSize } from '../../src/stream/protocol.js';
import { hostBackends } from '../helpers/host-backend.js';
import { sink, sha, until, roundTrip, wsPortForwardEcho } from '../helpers/stream-io.js';
import { buildGoSpdyClient, runGoSpdyClient } from '../helpers/go-spdy.js';
import { WsRemoteCommand } from '../helpers/ws-remotecommand.js';

const log = createLogger('silent');


const base = { containerId: 'c1', stdin: true, stdout: true, stderr: true, tty: false };

describe('streaming server (host processes)', () => {
  let server: StreamingServer;

  beforeAll(async () => {
    server = new StreamingServer({ address: '127.0.0.1', port: 0, tokenTtlSeconds: 60 }, hostBackends(), log);
    await server.start();
  });
  afterAll(async () => {
    await server.close();
  });

  it('SPDY exec without a tty: stdin to EOF, stdout and stderr apart, exit code 7', async () => {
    const url = server.execUrl({ ...base, cmd: ['sh', '-c', 'cat; echo oops >&2; exit 7'] });
    const stdin = new PassThrough();
    stdin.end('hello\nworld\n');
    const stdout = sink();
    const stderr = sink();
    const code = await runRemoteCommand(url, { stdin, stdout, stderr, tty: false });
    expect(code).toBe(7);
    expect(stdout.text()).toBe('hello\nworld\n');
    expect(stderr.text()).toBe('oops\n');
  });

  it('SPDY exec with a tty: an interactive shell echoes, takes resizes, and exits with its code', async () => {
    const url = server.execUrl({ ...base, stderr: false, tty: true, cmd: ['sh', '-i'] });
    const stdin = new PassThrough();
    const stdout = sink();
    const resize = new EventEmitter<{ resize: [TerminalSize] }>();
    const running = runRemoteCommand(url, { stdin, stdout, tty: true, resize, initialSize: { width: 91, height: 31 } });
    stdin.write('echo $((6*7))x\n');
    await until(() => stdout.text().includes('42x'), 'the shell to answer');
    // the terminal echoed our own typing too
    expect(stdout.text()).toContain('echo $((6*7))x');
    stdin.write('stty size\n');
    await until(() => stdout.text().includes('31 91'), 'the initial size');
    resize.emit('resize', { width: 120, height: 40 });
    await new Promise((r) => setTimeout(r, 200));
    stdin.write('stty size\n');
    await until(() => stdout.text().includes('40 120'), 'the new size');
    stdin.write('exit 3\n');
    expect(await running).toBe(3);
  });

  it('SPDY exec with a tty: stdin EOF reaches the process as end of input', async () => {
    const url = server.execUrl({ ...base, stderr: false, tty: true, cmd: ['sh', '-c', 'stty -echo; cat; echo done-reading'] });
    const stdin = new PassThrough();
    const stdout = sink();
    const running = runRemoteCommand(url, { stdin, stdout, tty: true });
    stdin.end('abc\n');
    expect(await running).toBe(0);
    expect(stdout.text()).toMatch(/abc\r?\n[\s\S]*done-reading/);
  });

  it('SPDY moves 20 MiB each way without stalling at 64 KiB (no WINDOW_UPDATE needed)', async () => {
    const payload = randomBytes(20 * 1024 * 1024);
    const url = server.execUrl({ ...base, stderr: false, cmd: ['cat'] });
    const stdin = new PassThrough();
    stdin.end(payload);
    const stdout = sink();
    const t0 = Date.now();
    expect(await runRemoteCommand(url, { stdin, stdout, tty: false })).toBe(0);
    expect(stdout.bytes().length).toBe(payload.length);
    expect(sha(stdout.bytes())).toBe(sha(payload));
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it('older SPDY protocols (v1, v2) still run a command', async () => {
    for (const protocols of [[REMOTECOMMAND_V2], [REMOTECOMMAND_V1]]) {
      const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['echo', 'old'] });
      const stdout = sink();
      expect(await runRemoteCommand(url, { stdout, tty: false, protocols })).toBe(0);
      expect(stdout.text()).toBe('old\n');
    }
  });

  it('reports a command that cannot start as an error, not an exit code', async () => {
    const url = server.execUrl({ ...base, stdin: false, cmd: ['/nonexistent/binary'] });
    await expect(runRemoteCommand(url, { stdout: sink(), stderr: sink(), tty: false })).rejects.toThrow(StreamingError);
  });

  it('WebSocket v5: stdin close signal, stdout/stderr channels, exit code 7 in the Status', async () => {
    const url = server.execUrl({ ...base, cmd: ['sh', '-c', 'cat; echo oops >&2; exit 7'] });
    const c = new WsRemoteCommand(url);
    await c.opened;
    expect(c.ws.protocol).toBe('v5.channel.k8s.io');
    c.write('via websocket\n');
    c.closeStdin();
    const out = await c.done;
    expect(out.stdout.toString()).toBe('via websocket\n');
    expect(out.stderr.toString()).toBe('oops\n');
    expect(out.exitCode).toBe(7);
    expect(out.status?.reason).toBe('NonZeroExitCode');
  });

  it('WebSocket v5 with a tty: shell echo and resize', async () => {
    const url = server.execUrl({ ...base, stderr: false, tty: true, cmd: ['sh', '-i'] });
    const c = new WsRemoteCommand(url);
    await c.opened;
    c.resize(77, 22);
    c.write('echo $((5+5))y\n');
    await c.waitForOutput('10y');
    c.write('stty size\n');
    await c.waitForOutput('22 77');
    c.write('exit 0\n');
    expect((await c.done).exitCode).toBe(0);
  });

  it('a token works once, and an unknown token is refused', async () => {
    const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['true'] });
    expect(await runRemoteCommand(url, { stdout: sink(), tty: false })).toBe(0);
    await expect(runRemoteCommand(url, { stdout: sink(), tty: false })).rejects.toMatchObject({ httpStatus: 404 });
    const ws = new WsRemoteCommand(url);
    await expect(ws.opened).rejects.toThrow(/HTTP 404/);
    await expect(dialSpdy(url.replace(/[^/]+$/, 'AAAAAAAAAAAAAAAAAAAAAAAA'), ['v4.channel.k8s.io'])).rejects.toMatchObject({ httpStatus: 404 });
  });

  it('a token of one kind does not open another kind', async () => {
    const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['true'] });
    await expect(PortForwardSession.open(url.replace('/exec/', '/portforward/'))).rejects.toMatchObject({ httpStatus: 404 });
  });

  it('the exec process is killed when the client goes away', async () => {
    const marker = `skstr-${randomBytes(4).toString('hex')}`;
    const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['sh', '-c', `echo started; sleep 300; : ${marker}`] });
    const { conn } = await dialSpdy(url, ['v4.channel.k8s.io']);
    const err = conn.createStream({ streamtype: ['error'] });
    const out = conn.createStream({ streamtype: ['stdout'] });
    err.on('error', () => undefined);
    out.on('error', () => undefined);
    let seen = '';
    out.on('data', (d: Buffer) => (seen += d.toString()));
    await until(() => seen.includes('started'), 'the command to start');
    const { execFileSync } = await import('node:child_process');
    const running = (): boolean => {
      try {
        execFileSync('pgrep', ['-f', marker]);
        return true;
      } catch {
        return false;
      }
    };
    expect(running()).toBe(true);
    conn.destroy();
    await until(() => !running(), 'the process to be killed');
  });
});

describe('streaming server tokens expire', () => {
  it('refuses a token past its TTL', async () => {
    const server = new StreamingServer({ address: '127.0.0.1', port: 0, tokenTtlSeconds: 1 }, hostBackends(), log);
    await server.start();
    try {
      const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['true'] });
      await new Promise((r) => setTimeout(r, 1100));
      await expect(runRemoteCommand(url, { stdout: sink(), tty: false })).rejects.toThrow(/unknown or expired/);
    } finally {
      await server.close();
    }
  });
});

describe('port-forward (host loopback as the pod)', () => {
  let server: StreamingServer;
  let echo: Server;
  let echoPort: number;

  beforeAll(async () => {
    server = new StreamingServer({ address: '127.0.0.1', port: 0, tokenTtlSeconds: 60 }, hostBackends(), log);
    await server.start();
    // An echo server that half-closes after the client does, like `cat` behind a socket.
    echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await server.close();
    await new Promise((r) => echo.close(r));
  });

  it('SPDY: 10 MB each way through a forwarded port, bytes checked', async () => {
    const session = await PortForwardSession.open(server.portForwardUrl({ podSandboxId: 'p1', ports: [] }));
    const payload = randomBytes(10 * 1000 * 1000);
    const back = await roundTrip(session, echoPort, payload);
    expect(back.length).toBe(payload.length);
    expect(sha(back)).toBe(sha(payload));
    session.close();
  });

  it('SPDY: many concurrent connections on one session', async () => {
    const session = await PortForwardSession.open(server.portForwardUrl({ podSandboxId: 'p1', ports: [echoPort] }));
    const payloads = Array.from({ length: 20 }, (_, i) => randomBytes(50_000 + i));
    const backs = await Promise.all(payloads.map((p) => roundTrip(session, echoPort, p)));
    backs.forEach((b, i) => expect(sha(b)).toBe(sha(payloads[i])));
    session.close();
  });

  it('SPDY: a closed port gets a clear error, and the session stays usable', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const session = await PortForwardSession.open(server.portForwardUrl({ podSandboxId: 'p1', ports: [] }));
    await expect(roundTrip(session, deadPort, Buffer.from('x'))).rejects.toThrow(new RegExp(`error forwarding port ${deadPort} to pod p1: .*ECONNREFUSED`));
    const back = await roundTrip(session, echoPort, Buffer.from('still fine'));
    expect(back.toString()).toBe('still fine');
    session.close();
  });

  it('SPDY: a port not named in the rpc is refused', async () => {
    const session = await PortForwardSession.open(server.portForwardUrl({ podSandboxId: 'p1', ports: [1] }));
    await expect(roundTrip(session, echoPort, Buffer.from('x'))).rejects.toThrow(/not named in the PortForward request/);
    session.close();
  });

  it('WebSocket: data and error channels per port, bytes checked', async () => {
    const payload = randomBytes(1_000_000);
    const back = await wsPortForwardEcho(server.portForwardUrl({ podSandboxId: 'p1', ports: [] }), echoPort, payload);
    expect(sha(back)).toBe(sha(payload));
  });

  it('plain GET on a streaming URL does not spend the token', async () => {
    const url = server.portForwardUrl({ podSandboxId: 'p1', ports: [] });
    const res = await fetch(url);
    expect(res.status).toBe(400);
    const session = await PortForwardSession.open(url);
    session.close();
  });

  it('client-side sockets: a TCP listener relays through the session', async () => {
    // What `skiff port-forward` does: accept locally, forward each connection.
    const session = await PortForwardSession.open(server.portForwardUrl({ podSandboxId: 'p1', ports: [] }));
    // Half-open: the client's EOF must not cut the answer still coming back from the pod.
    const local = createServer({ allowHalfOpen: true }, (s: Socket) => void session.forward(s, echoPort).catch(() => s.destroy()));
    await new Promise<void>((r) => local.listen(0, '127.0.0.1', r));
    const c = connect((local.address() as AddressInfo).port, '127.0.0.1');
    const payload = randomBytes(200_000);
    const back: Buffer[] = [];
    c.on('data', (d: Buffer) => back.push(d));
    c.end(payload);
    await new Promise((r) => c.once('close', r));
    expect(sha(Buffer.concat(back))).toBe(sha(payload));
    await new Promise((r) => local.close(r));
    session.close();
  });
});

describe("interop with Go's spdystream (kubelet/crictl/kubectl's SPDY library)", () => {
  let server: StreamingServer;
  let goClient: string;
  let echo: Server;

  beforeAll(async () => {
    goClient = await buildGoSpdyClient();
    server = new StreamingServer({ address: '127.0.0.1', port: 0, tokenTtlSeconds: 60 }, hostBackends(), log);
    await server.start();
    echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  }, 300_000);
  afterAll(async () => {
    await server?.close();
    await new Promise((r) => echo?.close(r));
  });

  it('exec: 20 MiB each way with no WINDOW_UPDATE from the client, stderr apart, exit code in the v4 Status', async () => {
    const payload = randomBytes(20 * 1024 * 1024);
    const url = server.execUrl({ ...base, cmd: ['sh', '-c', 'cat; echo oops >&2; exit 7'] });
    const r = await runGoSpdyClient(goClient, ['exec', url], payload);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBe(payload.length);
    expect(sha(r.stdout)).toBe(sha(payload));
    expect(r.stderr).toBe('oops\n');
    expect(parseErrorStream(r.status, true)).toEqual({ exitCode: 7 });
  });

  it('port-forward: 10 MB each way', async () => {
    const payload = randomBytes(10 * 1000 * 1000);
    const url = server.portForwardUrl({ podSandboxId: 'p1', ports: [] });
    const r = await runGoSpdyClient(goClient, ['pf', url, String((echo.address() as AddressInfo).port)], payload);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(r.stdout)).toBe(sha(payload));
  });
});

describe('streaming server over TLS', () => {
  it('serves https URLs when tls_cert/tls_key are set', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skstr-tls-'));
    try {
      const [cert, key] = [join(dir, 'c.pem'), join(dir, 'k.pem')];
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
      const server = new StreamingServer({ address: '127.0.0.1', port: 0, tokenTtlSeconds: 60, tlsCert: cert, tlsKey: key }, hostBackends(), log);
      await server.start();
      try {
        const url = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['echo', 'over tls'] });
        expect(url).toMatch(/^https:\/\//);
        // a client that checks certificates refuses this self-signed one
        await expect(dialSpdy(url, ['v4.channel.k8s.io'])).rejects.toThrow(/self[- ]signed/);
        const url2 = server.execUrl({ ...base, stdin: false, stderr: false, cmd: ['echo', 'over tls'] });
        const stdout = sink();
        expect(await runRemoteCommand(url2, { stdout, tty: false, rejectUnauthorized: false })).toBe(0);
        expect(stdout.text()).toBe('over tls\n');
      } finally {
        await server.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
