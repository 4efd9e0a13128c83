// The transport-neutral half of exec/attach: run the backend on a CommandIo, then say how it ended in the
// form the negotiated protocol expects on its error stream. SPDY and WebSocket transports both use this.
import type { Writable } from 'node:stream';
import { errorMessage } from '../errors.js';
import type { AttachRequest, CommandIo, ExecRequest, StreamingBackends } from './backend.js';
import { errorStatus, exitStatus } from './protocol.js';

export type RemoteCommand = { kind: 'exec'; req: ExecRequest } | { kind: 'attach'; req: AttachRequest };

/** exitCode for a finished exec (attach: 0 on detach or container exit); error when it could not run. */
export interface Outcome {
  exitCode?: number;
  error?: string;
}

export async function runRemoteCommand(cmd: RemoteCommand, io: CommandIo, backends: StreamingBackends): Promise<Outcome> {
  try {
    if (cmd.kind === 'exec') return { exitCode: await backends.exec.exec(cmd.req, io) };
    await backends.attach.attach(cmd.req, io);
    return { exitCode: 0 };
  } catch (err) {
    return { error: errorMessage(err) };
  } finally {
    await Promise.all([finish(io.stdout), finish(io.stderr)]);
  }
}

/**
 * The error stream's content. v4+ (statusJson): a Status object, success included, that carries the exit
 * code. v1–v3: plain text, empty on success.
 */
export function errorStreamPayload(outcome: Outcome, statusJson: boolean): string {
  if (statusJson) {
    const status = outcome.error !== undefined ? errorStatus(outcome.error) : exitStatus(outcome.exitCode ?? 0);
    return JSON.stringify(status);
  }
  if (outcome.error !== undefined) return outcome.error;
  if (outcome.exitCode) return `command terminated with non-zero exit code: exit status ${outcome.exitCode}`;
  return '';
}

/** Ends a writable and waits until its data is flushed (or it is gone). */
export function finish(w: Writable | undefined): Promise<void> {
  if (!w || w.destroyed || w.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      w.off('finish', done);
      w.off('close', done);
      w.off('error', done);
      resolve();
    };
    w.on('finish', done);
    w.on('close', done);
    w.on('error', done);
    if (!w.writableEnded) w.end();
  });
}
