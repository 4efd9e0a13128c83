// ExecSync mechanics: `<runtime> exec --process <file> --pid-file <file> <id>` with the output read from
// pipes into bounded buffers (bytes past the cap are read and dropped, so a `yes` never grows our
// memory), a timeout that kills the exec'd process itself (killing the runtime would leave it running),
// and completion on the runtime's exit plus a short drain: a background child that keeps stdout open
// must not hold the call.
import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { constants as osConstants } from 'node:os';
import type { ExecOptions, ExecResult } from './runtime-driver.js';
import { internal } from '../errors.js';

/** How long output may trail the exec'd process's exit. */
export const EXEC_DRAIN_MS = 200;
/** After a timeout kill, how long the runtime gets to notice and exit. */
const KILL_GRACE_MS = 5_000;

/** Keeps the first `cap` bytes written to it, counts the rest. */
export class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  total = 0;
  constructor(private readonly cap: number) {}
  push(b: Buffer): void {
    this.total += b.length;
    if (this.kept >= this.cap) return;
    const part = b.length > this.cap - this.kept ? b.subarray(0, this.cap - this.kept) : b;
    // copy: a subarray would pin the whole pooled chunk
    this.chunks.push(Buffer.from(part));
    this.kept += part.length;
  }
  get truncated(): boolean {
    return this.total > this.cap;
  }
  value(): Buffer {
    return Buffer.concat(this.chunks, this.kept);
  }
}

export interface ExecTarget {
  binary: string;
  global: string[];
  id: string;
  bundle: string;
}

export async function runExec(t: ExecTarget, opts: ExecOptions): Promise<ExecResult> {
  const tag = randomBytes(6).toString('hex');
  const procFile = join(t.bundle, `exec-${tag}.json`);
  const pidFile = join(t.bundle, `exec-${tag}.pid`);
  await writeFile(procFile, JSON.stringify({ ...opts.process, terminal: false }));
  try {
    return await new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(t.binary, [...t.global, 'exec', '--process', procFile, '--pid-file', pidFile, t.id], {
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out = new CappedBuffer(opts.maxOutputBytes);
      const err = new CappedBuffer(opts.maxOutputBytes);
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      let timedOut = false;
      let killTimer: NodeJS.Timeout | undefined;
      const killAll = async () => {
        // the exec'd process (in the container) first: once it dies the runtime exits on its own
        const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        killTimer = setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // already gone
          }
        }, KILL_GRACE_MS);
      };
      const timer =
        opts.timeoutMs > 0
          ? setTimeout(() => {
              timedOut = true;
              void killAll();
            }, opts.timeoutMs)
          : undefined;
      child.once('error', (e) => {
        clearTimeout(timer);
        clearTimeout(killTimer);
        reject(internal(`cannot run ${t.binary} exec: ${e.message}`, { container: t.id }));
      });
      const ended = (s: NodeJS.ReadableStream & { readableEnded: boolean }) =>
        new Promise<void>((r) => (s.readableEnded ? r() : s.once('end', () => r()).once('close', () => r())));
      const outputDone = Promise.all([ended(child.stdout), ended(child.stderr)]);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        clearTimeout(killTimer);
        void Promise.race([outputDone, new Promise((r) => setTimeout(r, EXEC_DRAIN_MS))]).then(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          const exitCode = code ?? (signal ? 128 + (osConstants.signals[signal] ?? 9) : 255);
          resolve({ exitCode, stdout: out.value(), stderr: err.value(), timedOut, truncated: out.truncated || err.truncated });
        });
      });
    });
  } finally {
    await rm(procFile, { force: true });
    await rm(pidFile, { force: true });
  }
}

