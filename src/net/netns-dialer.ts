// TCP connections to a port inside a pod's network namespace, for port-forward.
//
// Node cannot setns(), so a small relay process is started in the namespace (`nsenter --net=<pin>`): it
// listens on a unix socket in the daemon's state dir (path-bound unix sockets work across network
// namespaces) and, per accepted connection, reads the port on one line, dials localhost:port from inside
// the namespace and answers "ok" (then relays bytes both ways, half-closes included) or "error …".
// One relay per pod, started on demand and stopped when idle, so it never keeps a removed pod's
// namespace (and its veth) alive for long. It exits by itself when the daemon goes away (stdin EOF).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { internal, unavailable } from '../errors.js';

/** A relay with no open connection is stopped after this long. */
export const RELAY_IDLE_MS = 2_000;
/** How long a relay gets to start listening. */
const RELAY_START_TIMEOUT_MS = 10_000;
/** How long the dial inside the namespace may take. */
const DIAL_TIMEOUT_MS = 10_000;

/**
 * The relay's program, run by `node -e` inside the namespace. Self-contained: it is sent as source text,
 * so it may use nothing from this module.
 */
export function relayProgram(socketPath: string): void {
  const net = process.getBuiltinModule('node:net');
  const fs = process.getBuiltinModule('node:fs');
  try {
    fs.unlinkSync(socketPath);
  } catch {
    // not there
  }
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => client.destroy());
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 16) client.destroy();
        return;
      }
      client.off('data', onHead);
      client.pause();
      const port = Number(head.subarray(0, nl).toString('latin1'));
      const rest = head.subarray(nl + 1);
      // Like the kubelet runtimes: localhost, IPv4 first, then IPv6 for servers bound to ::1 only.
      const attempt = (hosts: string[], firstError?: NodeJS.ErrnoException): void => {
        const host = hosts[0];
        if (host === undefined) {
          client.end(`error ${firstError?.code ?? 'EIO'} ${firstError?.message ?? 'cannot connect'}\n`);
          return;
        }
        const target = net.connect({ host, port, allowHalfOpen: true });
        const failed = (err: NodeJS.ErrnoException): void => attempt(hosts.slice(1), firstError ?? err);
        target.once('error', failed);
        target.once('connect', () => {
          target.off('error', failed);
          // Only errors cut the other side: a normal close must not (destroy() drops bytes still queued
          // for writing; the pipes below half-close each side once the other has ended).
          target.on('error', () => client.destroy());
          client.on('error', () => target.destroy());
          client.write('ok\n');
          if (rest.length > 0) target.write(rest);
          client.pipe(target);
          target.pipe(client);
        });
      };
      if (!Number.isInteger(port) || port < 1 || port > 65535) client.end(`error EINVAL invalid port\n`);
      else attempt(['127.0.0.1', '::1']);
    };
    client.on('data', onHead);
  });
  server.listen(socketPath, () => process.stdout.write('ready\n'));
  // The daemon holds our stdin: when it goes away, so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}

interface Relay {
  proc: ChildProcess;
  socketPath: string;
  ready: Promise<void>;
  open: number;
  idleTimer?: NodeJS.Timeout;
}

export class NetnsDialer {
  private readonly relays = new Map<string, Relay>();
  private closed = false;

  constructor(
    /** A directory for the relays' sockets (short path: unix socket paths are limited to 107 bytes). */
    private readonly socketDir: string,
    private readonly log: Logger,
  ) {}

  /**
   * A TCP connection to `port` as seen inside the namespace pinned at `netnsPath` (undefined: the host's
   * own namespace, e.g. a hostNetwork pod). Rejects with the reason when nothing listens there.
   */
  async dial(netnsPath: string | undefined, port: number, signal?: AbortSignal): Promise<Socket> {
    if (this.closed) throw unavailable('the daemon is shutting down');
    if (netnsPath === undefined) return dialHost(port, signal);
    const relay = await this.relay(netnsPath);
    relay.open++;
    clearTimeout(relay.idleTimer);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      relay.open--;
      if (relay.open === 0 && !this.closed) {
        relay.idleTimer = setTimeout(() => this.stopRelay(netnsPath, relay), RELAY_IDLE_MS);
        relay.idleTimer.unref();
      }
    };
    try {
      const sock = await askRelay(relay.socketPath, port, signal);
      sock.once('close', release);
      return sock;
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Stops every relay (daemon shutdown). */
  close(): void {
    this.closed = true;
    for (const [path, relay] of this.relays) this.stopRelay(path, relay);
  }

  private async relay(netnsPath: string): Promise<Relay> {
    let relay = this.relays.get(netnsPath);
    if (relay && relay.proc.exitCode === null && relay.proc.signalCode === null) {
      await relay.ready;
      return relay;
    }
    await mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    const tag = createHash('sha256').update(netnsPath).digest('hex').slice(0, 16);
    const socketPath = join(this.socketDir, `pf-${tag}.sock`);
    const code = `(${relayProgram.toString()})(${JSON.stringify(socketPath)})`;
    const proc = spawn('nsenter', [`--net=${netnsPath}`, '--', process.execPath, '-e', code], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(internal(`port-forward relay for ${netnsPath} did not start in time`, { path: netnsPath }));
      }, RELAY_START_TIMEOUT_MS);
      proc.stdout.setEncoding('utf8').once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(internal(`cannot start the port-forward relay (nsenter): ${err.message}`, { path: netnsPath }));
      });
      proc.once('exit', (c, s) => {
        clearTimeout(timer);
        reject(internal(`port-forward relay for ${netnsPath} exited (${c ?? s}): ${stderr.trim()}`, { path: netnsPath }));
      });
    });
    ready.catch(() => undefined);
    relay = { proc, socketPath, ready, open: 0 };
    this.relays.set(netnsPath, relay);
    const mine = relay;
    proc.once('exit', () => {
      if (this.relays.get(netnsPath) === mine) this.relays.delete(netnsPath);
    });
    try {
      await ready;
    } catch (err) {
      this.relays.delete(netnsPath);
      throw err;
    }
    this.log.debug({ netns: netnsPath, pid: proc.pid }, 'port-forward relay started');
    return relay;
  }

  private stopRelay(netnsPath: string, relay: Relay): void {
    if (relay.open > 0 && !this.closed) return;
    clearTimeout(relay.idleTimer);
    if (this.relays.get(netnsPath) === relay) this.relays.delete(netnsPath);
    relay.proc.stdin?.end();
    relay.proc.kill('SIGKILL');
  }
}

function dialHost(port: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true, signal });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Connects to a relay, names the port, and returns the socket once the relay reached it. */
function askRelay(socketPath: string, port: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: socketPath, allowHalfOpen: true, signal });
    let answer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`timed out connecting to port ${port}`)), DIAL_TIMEOUT_MS);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.once('error', fail);
    s.once('connect', () => s.write(`${port}\n`));
    const onEnd = (): void => fail(new Error(`the relay closed the connection to port ${port}`));
    // Read the answer line in paused mode ('readable'), so the caller's later on('data') still starts
    // the flow (an explicit pause() would not be undone by it).
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = s.read() as Buffer | null) !== null) {
        answer = Buffer.concat([answer, chunk]);
        const nl = answer.indexOf(10);
        if (nl < 0) continue;
        s.off('readable', onReadable);
        s.off('error', fail);
        s.off('end', onEnd);
        clearTimeout(timer);
        const line = answer.subarray(0, nl).toString();
        if (line !== 'ok') {
          s.destroy();
          // "error ECONNREFUSED connect ECONNREFUSED 127.0.0.1:80" -> the message part
          reject(new Error(line.replace(/^error \S+ /, '')));
          return;
        }
        const rest = answer.subarray(nl + 1);
        if (rest.length > 0) s.unshift(rest);
        resolve(s);
        return;
      }
    };
    s.on('readable', onReadable);
    s.once('end', onEnd);
  });
}
