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
import type { EventEmitter } from 'node:events';
import type { CommandIo } from '../stream/backend.js';

/** After exit, output still in the pipe is drained for at most this long. */
const DRAIN_AFTER_EXIT_MS = 1000;
/** Printed by the raw-terminal wrapper once the terminal is raw (see runInPty). */
const RAW_MARKER = 'skiff:pty-raw:';
/** End of transmission: what a terminal sends for Ctrl-D, i.e. EOF for the program reading the tty. */
const EOT = '\x04';

export interface ProcessIoOptions {
  tty: boolean;
  env?: NodeJS.ProcessEnv;
  /** With tty: the program relays this terminal to one of its own (runc/crun exec -t): start it raw. */
  rawTerminal?: boolean;
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
      const size = io.resize.last;
      // A program that relays its terminal to another (runc -t) sets it raw itself, but only once it runs:
      // bytes typed before that would be echoed and line-edited (an early ^D even swallowed as our EOF).
      // So a shell makes it raw first and says so with a marker; stdin waits for the marker.
      const [cmd, argv] = opts.rawTerminal
        ? ['/bin/sh', ['-c', `stty raw -echo 2>/dev/null; printf '%s' '${RAW_MARKER}'; exec "$@"`, 'sh', file, ...args]]
        : [file, [...args]];
      term = pty.spawn(cmd, argv, {
        cols: size?.width || 80,
        rows: size?.height || 24,
        env: opts.env ?? process.env,
        name: 'xterm',
        // Bytes in and out, untouched: the program's output need not be UTF-8.
        encoding: null,
      });
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const out = io.stdout;
    // node-pty's terminal emits 'close' when reading it fails with EIO: all its output has been read.
    const outputEnded = new Promise<void>((r) => (term as unknown as EventEmitter).once('close', () => r()));
    // rawTerminal: output up to the marker is the wrapper's, not the program's.
    let preamble: Buffer | undefined = opts.rawTerminal ? Buffer.alloc(0) : undefined;
    const held: (Buffer | string)[] = [];
    const dataSub = term.onData((chunk: string | Buffer) => {
      let d: Buffer = Buffer.from(chunk);
      if (preamble) {
        preamble = Buffer.concat([preamble, d]);
        const at = preamble.indexOf(RAW_MARKER);
        if (at < 0) return;
        d = preamble.subarray(at + RAW_MARKER.length);
        preamble = undefined;
        for (const b of held.splice(0)) write(b);
        if (d.length === 0) return;
      }
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
    // node-pty types say string, but with encoding null it writes whatever it is given to the pty.
    function write(b: Buffer | string): void {
      term.write(b as string);
    }
    const toPty = (b: Buffer | string): void => {
      if (preamble) held.push(b);
      else write(b);
    };
    const onStdin = (b: Buffer): void => toPty(b);
    const onStdinEnd = (): void => toPty(EOT);
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
      // The last output can arrive after the exit event (the kernel passes pty data on asynchronously,
      // later still on a busy machine): wait for the end of the terminal's output (EIO once no process
      // holds it open), but not for ever: a background child may keep it open.
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(cap);
        dataSub.dispose();
        resolve(signal ? signalExitCode(signal) : exitCode);
      };
      const cap = setTimeout(finish, DRAIN_AFTER_EXIT_MS);
      void outputEnded.then(finish);
    });
  });
}
