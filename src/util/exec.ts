// Runs short-lived host commands (mount, ip, runc state, …) with a timeout, bounded output, and the
// whole process group killed on expiry. Not for long-lived children (conmon), nor for commands whose
// descendants may keep stdout open: use files or 'ignore' for those (see src/oci).
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { deadlineExceeded, internal, cancelled } from '../errors.js';

export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to stdin; a stream is piped (its memory stays bounded however much it sends). */
  input?: string | Buffer | Readable;
  /** The caller gave up: the command's process group is killed and run rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Output beyond this is dropped (the command still runs to the end). */
  maxOutputBytes?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** How long output may trail the exit of a command (a grandchild holding the pipe must not block us). */
const OUTPUT_GRACE_MS = 250;

/**
 * Output still in a child's pipes when it exits arrives after 'exit'. Call this before the exit (it
 * starts listening for the EOFs); the returned function, called at the exit, resolves once both streams
 * ended or `graceMs` passed, whichever is first (a background grandchild may hold them forever).
 */
export function outputDrained(streams: (NodeJS.ReadableStream & { readableEnded: boolean })[]): (graceMs: number) => Promise<void> {
  const ended = (s: NodeJS.ReadableStream & { readableEnded: boolean }) =>
    new Promise<void>((r) => (s.readableEnded ? r() : s.once('end', () => r()).once('close', () => r())));
  const all = Promise.all(streams.map(ended)).then(() => undefined);
  return (graceMs) => Promise.race([all, new Promise<void>((r) => setTimeout(r, graceMs))]);
}

/** Runs a command to completion; never rejects on a non-zero exit (see runChecked). */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const { timeoutMs = 30_000, maxOutputBytes = 4 * 1024 * 1024 } = opts;
  const { signal } = opts;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    child.stdout.on('data', (b: Buffer) => {
      if (outLen < maxOutputBytes) out.push(b);
      outLen += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      if (errLen < maxOutputBytes) err.push(b);
      errLen += b.length;
    });
    let timedOut = false;
    let aborted = false;
    let inputError: Error | undefined;
    const killGroup = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    const onAbort = () => {
      aborted = true;
      killGroup();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(internal(`cannot run ${cmd}: ${e.message}`, { command: cmd }, e));
    });
    // 'exit', not 'close': a grandchild holding the pipes must not keep us waiting.
    const drained = outputDrained([child.stdout, child.stderr]);
    child.once('exit', (code, exitSignal) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      void drained(OUTPUT_GRACE_MS).then(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        if (aborted && signal) {
          reject(abortError(signal));
          return;
        }
        if (inputError) {
          reject(internal(`writing to ${cmd} failed: ${inputError.message}`, { command: cmd }, inputError));
          return;
        }
        if (timedOut) {
          reject(deadlineExceeded(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms`, { command: cmd }));
          return;
        }
        resolve({ code, signal: exitSignal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
      });
    });
    child.stdin.on('error', () => undefined);
    const input = opts.input ?? '';
    if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
    else {
      // a failing input would otherwise be an unhandled 'error' (the daemon exits) and leave stdin open
      input.once('error', (e) => {
        inputError = e;
        killGroup();
      });
      input.pipe(child.stdin);
    }
  });
}

/** Like run, but a non-zero exit is an INTERNAL error carrying the command's stderr. */
export async function runChecked(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const res = await run(cmd, args, opts);
  if (res.code !== 0) {
    const why = (res.stderr.trim() || res.stdout.trim() || `exit ${res.code ?? res.signal}`).slice(0, 2000);
    throw internal(`${cmd} ${args.slice(0, 3).join(' ')} failed: ${why}`, { command: cmd });
  }
  return res;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : cancelled('the command was cancelled');
}
