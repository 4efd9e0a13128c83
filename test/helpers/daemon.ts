// Starts a real `skiff daemon` (the built binary) on a scratch root/state/socket and connects a real CRI
// client to it. Every integration test goes through here.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, runtimeCall, type CriClient } from '../../src/cli/client.js';
import { mountsUnder, unmountAll } from '../../src/sandbox/mounts.js';
import { expect, afterEach } from 'vitest';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const SKIFF_BIN = join(REPO_ROOT, 'bin/skiff');

export interface TestDaemon {
  dir: string;
  root: string;
  state: string;
  socket: string;
  configFile: string;
  proc: ChildProcess;
  client: CriClient;
  /** Everything the daemon wrote to stderr so far. */
  logs(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM (or `signal`), wait for exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** stop + remove the scratch dir. */
  cleanup(): Promise<void>;
}

export interface StartOptions {
  /** Extra TOML appended to the generated config (root/state/socket are set by flags). */
  config?: string;
  /** Reuse dirs of an earlier daemon (restart tests). */
  dir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Don't wait for the socket (for start-up failure tests). */
  noWait?: boolean;
  /** Program that runs `bin/skiff daemon …` instead of node itself (a wrapper dropping privileges, say). */
  execPath?: string;
}

/** Removes a scratch dir after unmounting whatever a daemon left mounted below it (deepest first). */
export async function removeScratchDir(dir: string): Promise<void> {
  scratchDirs.delete(dir);
  await unmountBelow(dir);
  await rm(dir, { recursive: true, force: true });
}

/** A daemon keeps its pod dir a private mount of its own (src/sandbox): rm cannot cross it. */
async function unmountBelow(dir: string): Promise<void> {
  for (const m of (await mountsUnder(dir)).reverse()) await unmountAll(m);
}

/** Scratch dirs of this test file not removed yet: test/setup.ts removes what is left after the file. */
const scratchDirs = new Set<string>();

export async function makeScratchDir(prefix = 'skiff-test-'): Promise<string> {
  // Short paths: unix socket paths are limited to 107 bytes.
  const dir = await mkdtemp(join(tmpdir(), prefix));
  scratchDirs.add(dir);
  return dir;
}

export async function removeLeftoverScratchDirs(): Promise<void> {
  for (const dir of [...scratchDirs]) await removeScratchDir(dir);
}

export async function startDaemon(opts: StartOptions = {}): Promise<TestDaemon> {
  const dir = opts.dir ?? (await makeScratchDir());
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const socket = join(dir, 's.sock');
  const configFile = join(dir, 'config.toml');
  await writeFile(configFile, opts.config ?? '');
  const proc = spawn(
    opts.execPath ?? process.execPath,
    [SKIFF_BIN, 'daemon', '--config', configFile, '--root', root, '--state', state, '--socket', socket, '--log-level', 'debug', ...(opts.args ?? [])],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...opts.env } },
  );
  let stderr = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<number | string>((res) => proc.once('exit', (code, sig) => res(code ?? sig ?? -1)));
  const client = connect(socket, 30_000);
  const d: TestDaemon = {
    dir,
    root,
    state,
    socket,
    configFile,
    proc,
    client,
    logs: () => stderr,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
    async cleanup() {
      client.close();
      await d.stop();
      await unmountBelow(dir);
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
  if (!opts.noWait) await waitReady(d);
  return d;
}

async function waitReady(d: TestDaemon, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedEarly = false;
  void d.exited.then(() => {
    exitedEarly = true;
  });
  // grpc-js backs off ~1 s after a refused connect: wait for the socket file before the first call.
  const { access } = await import('node:fs/promises');
  while (!exitedEarly && Date.now() < deadline && !(await access(d.socket).then(() => true, () => false))) {
    await new Promise((r) => setTimeout(r, 20));
  }
  for (;;) {
    if (exitedEarly) throw new Error(`daemon exited during start-up:\n${d.logs()}`);
    try {
      await runtimeCall(d.client, 'Version', {}, 1000);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`daemon not ready after ${timeoutMs} ms:\n${d.logs()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Runs the `skiff` CLI and collects its output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [SKIFF_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.stdin.end(input ?? '');
    p.once('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * The `skiff` client bound to a daemon's socket (read when called, so a daemon started in beforeAll works):
 * `cli(...)` runs it; `ok(...)` also expects exit 0 and an empty stderr, and returns stdout.
 */
export function cliFor(socket: () => string) {
  const cli = (...args: string[]) => runCli(['-r', `unix://${socket()}`, ...args]);
  const ok = async (...args: string[]): Promise<string> => {
    const r = await cli(...args);
    expect(r.stderr, args.join(' ')).toBe('');
    expect(r.code, args.join(' ')).toBe(0);
    return r.stdout;
  };
  return { cli, ok };
}

/**
 * For a test file: returns a `daemon(opts)` that starts a daemon and cleans it up after the current test
 * (registers the afterEach).
 */
export function daemonsPerTest(): (opts?: StartOptions) => Promise<TestDaemon> {
  const daemons: TestDaemon[] = [];
  afterEach(async () => {
    await Promise.all(daemons.splice(0).map((d) => d.cleanup()));
  });
  return async (opts: StartOptions = {}) => {
    const d = await startDaemon(opts);
    daemons.push(d);
    return d;
  };
}
