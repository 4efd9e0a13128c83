// Runs one foreground process wired to a streaming client's stdio: plain pipes, or a pseudo-terminal (via
// @lydell/node-pty: Node itself cannot open a pty, nor receive one over a console socket). Used for
// `runc exec` by the OCI exec backend.
// - Resolves with the exit code (128+signal when killed by a signal).
// - A process that leaves a grandchild holding its stdout must not hang us: after the process exits we wait
//   briefly for the pipes to drain, then stop reading.
// - When the client goes away (io.signal) the process is killed.
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import * as pty from '@lydell/node-pty';
import type { CommandIo } from '../stream/backend.js';

/** After exit, output still in the pipe is drained for at most this long. */
const DRAIN_AFTER_EXIT_MS = 1000;
/** End of transmission: what a terminal sends for Ctrl-D, i.e. EOF for the program reading the tty. */
const EOT = '\x04';

export interface ProcessIoOptions {
  tty: boolean;
  env?: NodeJS.ProcessEnv;
  /** Called when the client goes away, before the process itself is killed (e.g. kill the exec'd pid). */
  onAbort?: () => void;
}

function signalExitCode(signal: NodeJS.Signals | number | null | undefined): number {
  if (signal === null || signal === undefined || signal === 0) return 0;
  const n = typeof signal === 'number' ? signal : (osConstants.signals[signal] ?? 0);
  return 128 + n;
}

export function runProcessWithIo(file: string, args: readonly string[], io: CommandIo, opts: ProcessIoOptions): Promise<number> {
  return opts.tty ? runInPty(file, args, io, opts) : runWithPipes(file, args, io, opts);
}

function runWithPipes(file: string, args: readonly string[], io: CommandIo, opts: ProcessIoOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: opts.env ?? process.env,
      detached: true,
      stdio: [io.stdin ? 'pipe' : 'ignore', io.stdout ? 'pipe' : 'ignore', io.stderr ? 'pipe' : 'ignore'],
    });
    const kill = (): void => {
      opts.onAbort?.();
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    if (io.signal.aborted) kill();
    io.signal.addEventListener('abort', kill, { once: true });
    if (io.stdin && child.stdin) {
      child.stdin.on('error', () => undefined);
      io.stdin.pipe(child.stdin);
    }
    const outputs: Promise<void>[] = [];
    for (const [from, to] of [
      [child.stdout, io.stdout],
      [child.stderr, io.stderr],
    ] as const) {
      if (!from || !to) continue;
      from.pipe(to, { end: false });
      outputs.push(new Promise((r) => from.once('close', r)));
    }
    child.once('error', (err) => {
      io.signal.removeEventListener('abort', kill);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      io.signal.removeEventListener('abort', kill);
      if (io.stdin && child.stdin) io.stdin.unpipe(child.stdin);
      const timer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, DRAIN_AFTER_EXIT_MS);
      void Promise.all(outputs).then(() => {
        clearTimeout(timer);
        resolve(code ?? signalExitCode(signal));
      });
    });
  });
}

function runInPty(file: string, args: readonly string[], io: CommandIo, opts: ProcessIoOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    let term: pty.IPty;
    try {
      term = pty.spawn(file, [...args], {
        cols: 80,
        rows: 24,
        env: (opts.env ?? process.env),
        name: 'xterm',
      });
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const out = io.stdout;
    const dataSub = term.onData((d) => {
      if (out && !out.writableEnded && !out.write(d)) {
        term.pause();
        out.once('drain', () => term.resume());
      }
    });
    const onResize = ({ width, height }: { width: number; height: number }): void => {
      if (width > 0 && height > 0) {
        try {
          term.resize(width, height);
        } catch {
          // the process is gone
        }
      }
    };
    io.resize.on('resize', onResize);
    const onStdin = (b: Buffer): void => term.write(b.toString('utf8'));
    const onStdinEnd = (): void => term.write(EOT);
    io.stdin?.on('data', onStdin);
    io.stdin?.once('end', onStdinEnd);
    const kill = (): void => {
      opts.onAbort?.();
      try {
        process.kill(-term.pid, 'SIGKILL');
      } catch {
        term.kill('SIGKILL');
      }
    };
    if (io.signal.aborted) kill();
    io.signal.addEventListener('abort', kill, { once: true });
    term.onExit(({ exitCode, signal }) => {
      io.signal.removeEventListener('abort', kill);
      io.resize.off('resize', onResize);
      io.stdin?.off('data', onStdin);
      io.stdin?.off('end', onStdinEnd);
      // node-pty can deliver the last output just after the exit event.
      setTimeout(() => {
        dataSub.dispose();
        resolve(signal ? signalExitCode(signal) : exitCode);
      }, 50);
    });
  });
}
