// The local end of an interactive session (`exec -it`, `attach -it`): the terminal in raw mode while the
// session runs and restored afterwards, whatever way it ends; window sizes sent when they change.
import { EventEmitter } from 'node:events';
import type { RemoteCommandOptions } from '../stream/client.js';
import type { TerminalSize } from '../stream/protocol.js';

/** Runs `session` with stdio wired for remotecommand; restores the terminal before returning. */
export async function withTerminal<T>(opts: { stdin: boolean; tty: boolean }, session: (io: RemoteCommandOptions) => Promise<T>): Promise<T> {
  const input = process.stdin;
  const output = process.stdout;
  const raw = opts.tty && opts.stdin && input.isTTY;
  const resize = new EventEmitter<{ resize: [TerminalSize] }>();
  const size = (): TerminalSize | undefined => (output.isTTY ? { width: output.columns, height: output.rows } : undefined);
  const onResize = (): void => {
    const s = size();
    if (s) resize.emit('resize', s);
  };
  const restore = (): void => {
    if (raw && input.isTTY) input.setRawMode(false);
  };
  // A signal that kills us must not leave the user's terminal raw.
  const onExit = (): void => restore();
  if (raw) input.setRawMode(true);
  process.once('exit', onExit);
  if (opts.tty) output.on('resize', onResize);
  try {
    return await session({
      stdin: opts.stdin ? input : undefined,
      stdout: output,
      stderr: opts.tty ? undefined : process.stderr,
      tty: opts.tty,
      resize,
      initialSize: opts.tty ? size() : undefined,
    });
  } finally {
    output.off('resize', onResize);
    process.off('exit', onExit);
    restore();
    // Reading stdin keeps the process alive: let go of it.
    if (opts.stdin) input.pause();
  }
}
