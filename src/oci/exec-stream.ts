// Streaming exec mechanics: `<runtime> exec --process <file> --pid-file <file> <id>` in the foreground,
// its stdio wired to a streaming client (src/oci/process-io.ts). With a tty the runtime's own stdin is a
// pseudo-terminal: runc/crun then make the container's pty themselves (console socket), copy between the
// two, and resize the inner one when ours changes size (SIGWINCH), so resize events reach the process.
// The exec'd process is killed directly when the client goes away: killing the runtime alone would leave
// it running in the container.
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { CommandIo } from '../stream/backend.js';
import type { OciProcess } from './spec/types.js';
import { runProcessWithIo } from './process-io.js';

export interface StreamExecTarget {
  /** the runtime binary (runc, crun) and its global args (--root, …) */
  binary: string;
  global: string[];
  id: string;
  bundle: string;
}

export async function runStreamingExec(t: StreamExecTarget, proc: OciProcess, tty: boolean, io: CommandIo): Promise<number> {
  const tag = randomBytes(6).toString('hex');
  const procFile = join(t.bundle, `exec-${tag}.json`);
  const pidFile = join(t.bundle, `exec-${tag}.pid`);
  await writeFile(procFile, JSON.stringify({ ...proc, terminal: tty }));
  const killExecd = (): void => {
    let pid = 0;
    try {
      pid = Number(readFileSync(pidFile, 'utf8').trim());
    } catch {
      // not started yet: killing the runtime stops it from starting
    }
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  try {
    return await runProcessWithIo(t.binary, [...t.global, 'exec', '--process', procFile, '--pid-file', pidFile, t.id], io, { tty, rawTerminal: true, onAbort: killExecd });
  } finally {
    await rm(procFile, { force: true });
    await rm(pidFile, { force: true });
  }
}
