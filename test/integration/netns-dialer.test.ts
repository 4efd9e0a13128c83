// NetnsDialer against a real network namespace: the relay runs inside it (nsenter), so a server bound to
// the namespace's loopback is reachable and the host's loopback is not.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { createLogger } from '../../src/log.js';
import { NetnsDialer, RELAY_IDLE_MS } from '../../src/net/netns-dialer.js';
import { makeScratchDir, removeScratchDir } from '../helpers/daemon.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('NetnsDialer', () => {
  const ns = `skstr${randomBytes(3).toString('hex')}`;
  const nsPath = `/run/netns/${ns}`;
  let dir: string;
  let echo: ChildProcess;
  let hostOnly: Server;
  let hostOnlyPort: number;
  let dialer: NetnsDialer;

  beforeAll(async () => {
    dir = await makeScratchDir('skstr-');
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // An echo server on port 7007 of the namespace's loopback only.
    echo = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e',
      "require('net').createServer({allowHalfOpen:true},s=>s.pipe(s)).listen(7007,'127.0.0.1',()=>console.log('up'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => echo.stdout!.once('data', r));
    hostOnly = createServer((s) => s.end('host'));
    await new Promise<void>((r) => hostOnly.listen(0, '127.0.0.1', r));
    hostOnlyPort = (hostOnly.address() as AddressInfo).port;
    dialer = new NetnsDialer(dir, createLogger('silent'));
  });

  afterAll(async () => {
    dialer.close();
    echo.kill('SIGKILL');
    await new Promise((r) => hostOnly.close(r));
    execFileSync('ip', ['netns', 'del', ns]);
    await removeScratchDir(dir);
  });

  it('reaches a port inside the namespace, 10 MB each way intact, with half-close', async () => {
    const s = await dialer.dial(nsPath, 7007);
    const payload = randomBytes(10 * 1000 * 1000);
    const back: Buffer[] = [];
    s.on('data', (d: Buffer) => back.push(d));
    s.end(payload);
    await new Promise((r) => s.once('close', r));
    expect(sha(Buffer.concat(back))).toBe(sha(payload));
  });

  it('serves concurrent connections through one relay', async () => {
    const payloads = Array.from({ length: 10 }, () => randomBytes(100_000));
    const backs = await Promise.all(
      payloads.map(async (p) => {
        const s = await dialer.dial(nsPath, 7007);
        const parts: Buffer[] = [];
        s.on('data', (d: Buffer) => parts.push(d));
        s.end(p);
        await new Promise((r) => s.once('close', r));
        return Buffer.concat(parts);
      }),
    );
    backs.forEach((b, i) => expect(sha(b)).toBe(sha(payloads[i])));
  });

  it('a closed port is refused with the reason; the host loopback is not the pod loopback', async () => {
    await expect(dialer.dial(nsPath, 7008)).rejects.toThrow(/ECONNREFUSED/);
    await expect(dialer.dial(nsPath, hostOnlyPort)).rejects.toThrow(/ECONNREFUSED/);
    // without a namespace (hostNetwork pod), the host's loopback
    const s = await dialer.dial(undefined, hostOnlyPort);
    const text = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
    expect(text).toBe('host');
    s.destroy();
  });

  it('stops an idle relay, so it does not keep the namespace alive', async () => {
    const s = await dialer.dial(nsPath, 7007);
    const inNs = (): boolean => execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).trim().split('\n').length > 1;
    expect(inNs()).toBe(true); // echo server + relay
    s.destroy();
    await new Promise((r) => setTimeout(r, RELAY_IDLE_MS + 500));
    expect(inNs()).toBe(false); // only the echo server is left
  });
});
