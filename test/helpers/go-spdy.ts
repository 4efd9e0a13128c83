// Builds and runs test/fixtures/spdy-client (Go's spdystream, as kubelet/crictl/kubectl use it) against our
// streaming server. Needs Debian's golang-go and golang-github-docker-spdystream-dev (scripts/setup.sh).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './daemon.js';

/** Compiles the client once per test file; returns the binary's path. */
export async function buildGoSpdyClient(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skstr-go-'));
  const bin = join(dir, 'spdy-client');
  execFileSync('go', ['build', '-o', bin, join(REPO_ROOT, 'test/fixtures/spdy-client/main.go')], {
    env: { ...process.env, GOPATH: '/usr/share/gocode', GO111MODULE: 'off', GOCACHE: join(tmpdir(), 'skiff-go-cache'), GOFLAGS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 300_000,
  });
  return bin;
}

export interface GoRun {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** exec: what the server sent on the error stream (a v4 Status) */
  status: string;
}

export function runGoSpdyClient(bin: string, args: string[], input: Buffer): Promise<GoRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    let status = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    (p.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (status += d.toString()));
    p.once('error', reject);
    p.stdin.on('error', () => undefined);
    p.stdin.end(input);
    p.once('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err, status }));
  });
}
