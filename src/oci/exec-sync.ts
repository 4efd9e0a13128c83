// ExecSync mechanics. `runc exec` in the foreground copies the process's output through pipes of its own
// and waits for their EOF, so a background child that keeps stdout open holds it (measured: `sleep 5 &`
// held it 5 s). So, as CRI-O does, the exec runs under conmon (`-e --exec-process-spec`), a subreaper
// that reports the process's pid and then its exit code on the sync socket the moment it exits.
// conmon's `passthrough` log driver hands our pipes straight to the process (no per-line log records:
// `yes` through k8s-file records measured ~1 MB/s); we keep at most maxOutputBytes of them (the rest is
// read and dropped, so memory stays flat) and, once the exit is reported, drain for a short while only.
// The timeout kills the exec'd process itself (by the pid conmon reported).
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ExecOptions, ExecResult } from './runtime-driver.js';
import { deadlineExceeded, internal } from '../errors.js';
import { outputDrained } from '../util/exec.js';
import { parseConmonSync } from './conmon-sync.js';

/**
 * How long conmon gets to report the exec'd process's pid (runc exec takes well under a second). Separate
 * from the command's own timeout, which may be 0 (none): without it a wedged conmon hangs ExecSync forever.
 */
export const PID_ARRIVAL_MS = 30_000;
/** After the exec'd process was killed, how long conmon gets to report before we give up on it. */
const KILL_GRACE_MS = 5_000;
/** How long output may trail the exec'd process's exit (a background child may hold the pipes). */
export const EXEC_DRAIN_MS = 200;

/** Bytes a buffer may still keep; several buffers may draw on one. */
export interface OutputBudget {
  left: number;
}

/**
 * What all ExecSyncs running at once may keep of their output beyond each one's first EXEC_OUTPUT_OWN_BYTES.
 * Each may keep kubelet's 16 MiB, but sixty execs of `yes` at once took the daemon to 1.45 GB; past this,
 * output is cut as if at the per-exec cap. The first MiB of every exec is its own, so execs that hold much
 * of the pool for long never leave a probe without its output.
 */
export const EXEC_OUTPUT_SHARED_BYTES = 64 * 1024 * 1024;
export const EXEC_OUTPUT_OWN_BYTES = 1024 * 1024;
const sharedByExecs: OutputBudget = { left: EXEC_OUTPUT_SHARED_BYTES };

/** setTimeout's longest delay (about 24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Keeps the first bytes written to it, up to `budget` (shared by an exec's stdout and stderr); counts the
 * rest. With `pool`, bytes beyond what `own` still allows are drawn from the pool (shared by all execs).
 */
export class CappedBuffer {
  private buf = Buffer.alloc(0);
  private kept = 0;
  private fromPool = 0;
  total = 0;
  constructor(
    private readonly budget: OutputBudget,
    private readonly pool?: { own: OutputBudget; shared: OutputBudget },
  ) {}
  private left(): number {
    return this.pool ? Math.min(this.budget.left, this.pool.own.left + this.pool.shared.left) : this.budget.left;
  }
  push(b: Buffer): void {
    this.total += b.length;
    const left = this.left();
    const room = Math.min(b.length, left);
    if (room <= 0) return;
    if (this.kept + room > this.buf.length) {
      // grow by doubling (bounded by what the budgets still allow): few copies, no per-chunk objects
      const size = Math.min(Math.max(this.buf.length * 2, this.kept + room, 64 * 1024), this.kept + left);
      const next = Buffer.allocUnsafe(size);
      this.buf.copy(next, 0, 0, this.kept);
      this.buf = next;
    }
    b.copy(this.buf, this.kept, 0, room);
    this.kept += room;
    this.budget.left -= room;
    if (this.pool) {
      const own = Math.min(room, this.pool.own.left);
      this.pool.own.left -= own;
      this.pool.shared.left -= room - own;
      this.fromPool += room - own;
    }
  }
  /** Gives back to the shared pool what was drawn from it (the exec is over). */
  release(): void {
    if (this.pool) this.pool.shared.left += this.fromPool;
    this.fromPool = 0;
    this.buf = Buffer.alloc(0);
  }
  get truncated(): boolean {
    return this.total > this.kept;
  }
  value(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.kept));
  }
}

export interface ExecTarget {
  conmon: string;
  runtime: string;
  runtimeArgs: string[];
  id: string;
  bundle: string;
  /** conmon's attach-socket dir (it insists on making a link there for every session) */
  socketDir: string;
  /** overrides PID_ARRIVAL_MS (tests) */
  pidTimeoutMs?: number;
}

export async function runExec(t: ExecTarget, opts: ExecOptions): Promise<ExecResult> {
  const execId = `exec-${randomBytes(8).toString('hex')}`;
  const dir = join(t.bundle, execId);
  await mkdir(dir, { recursive: true });
  const procFile = join(dir, 'process.json');
  await writeFile(procFile, JSON.stringify({ ...opts.process, terminal: false }));
  const args = [
    '--api-version', '1',
    '-c', t.id,
    '-u', execId,
    '-r', t.runtime,
    ...t.runtimeArgs.flatMap((a) => ['--runtime-arg', a]),
    '-b', t.bundle,
    '-p', join(dir, 'pid'),
    '-l', 'passthrough',
    '--exit-dir', dir,
    '--socket-dir-path', t.socketDir,
    '-e', '--exec-process-spec', procFile,
    '--sync',
    '--log-level', 'error',
  ];
  const outputs: CappedBuffer[] = [];
  try {
    return await new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(t.conmon, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, _OCI_SYNCPIPE: '3' } }) as ChildProcessByStdio<null, Readable, Readable>;
      const budget = { left: opts.maxOutputBytes };
      const pool = { own: { left: EXEC_OUTPUT_OWN_BYTES }, shared: sharedByExecs };
      const out = new CappedBuffer(budget, pool);
      const err = new CappedBuffer(budget, pool);
      outputs.push(out, err);
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      const sync = child.stdio[3] as Socket;
      let buf = '';
      let pid = 0;
      let exitCode: number | undefined;
      let timedOut = false;
      let message: string | undefined;
      let timer: NodeJS.Timeout | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      const killProcess = () => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      };
      let killing = false;
      const stop = () => {
        if (killing) return;
        killing = true;
        if (pid > 0) killProcess();
        // conmon reports the kill; if it does not, it goes too
        graceTimer = setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // gone already
          }
        }, KILL_GRACE_MS);
      };
      // a timeout past what a timer can hold (kubelet passes seconds; days are "none" in practice)
      if (opts.timeoutMs > 0 && opts.timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          timedOut = true;
          stop();
        }, opts.timeoutMs);
      }
      // No pid in time: conmon is wedged. Kill its group (nothing of ours runs yet) and report that.
      let pidLost = false;
      const pidTimeoutMs = t.pidTimeoutMs ?? PID_ARRIVAL_MS;
      const pidTimer = setTimeout(() => {
        if (pid > 0) return;
        pidLost = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // gone already
        }
      }, pidTimeoutMs);
      const onAbort = () => stop();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.signal?.aborted) stop();
      sync.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const m = parseConmonSync(line);
            if (pid === 0) {
              if (!(m.value > 0)) message = m.message ?? 'the exec could not be started';
              else {
                clearTimeout(pidTimer);
                pid = m.value;
                if (killing) killProcess();
              }
            } else if (exitCode === undefined) {
              exitCode = m.value;
              message = m.message;
            }
          } catch {
            // not JSON: ignore
          }
        }
      });
      sync.on('error', () => undefined);
      child.once('error', (e) => {
        clearTimeout(timer);
        clearTimeout(graceTimer);
        clearTimeout(pidTimer);
        reject(internal(`cannot run conmon for exec: ${e.message}`, { container: t.id }));
      });
      const drained = outputDrained([child.stdout, child.stderr]);
      child.once('exit', (code) => {
        clearTimeout(timer);
        clearTimeout(graceTimer);
        clearTimeout(pidTimer);
        opts.signal?.removeEventListener('abort', onAbort);
        // Output still in the pipes arrives after the exit; a background child may hold them forever.
        void drained(EXEC_DRAIN_MS).then(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          sync.destroy();
          if (pidLost) {
            reject(deadlineExceeded(`conmon did not report the exec'd process within ${pidTimeoutMs} ms; it was killed`, { container: t.id }));
            return;
          }
          if (pid === 0 && !killing) {
            const why = (message ?? err.value().toString('utf8').trim()) || `conmon exited with ${code}`;
            reject(internal(`exec failed: ${why}`.slice(0, 2000), { container: t.id }));
            return;
          }
          if (exitCode === undefined && !killing) {
            // conmon went without reporting the exit (killed): the process it watched may still run, untracked
            killProcess();
            reject(internal(`exec monitor (conmon) ended (${code ?? 'signal'}) before the exec'd process did; that process (pid ${pid}) was killed, what it started may remain`, { container: t.id }));
            return;
          }
          if (exitCode === undefined || Number.isNaN(exitCode)) exitCode = 137;
          resolve({ exitCode, timedOut, stdout: out.value(), stderr: err.value(), truncated: out.truncated || err.truncated });
        });
      });
    });
  } finally {
    for (const o of outputs) o.release();
    await rm(dir, { recursive: true, force: true });
    await rm(join(t.socketDir, execId), { force: true });
  }
}
