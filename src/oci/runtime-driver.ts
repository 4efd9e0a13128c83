// The one seam between the container manager and the OCI runtime machinery (like CRI-O's RuntimeImpl).
// The conmon + runc/crun implementation is in conmon-driver.ts; a test about the caller may swap in a
// fake, the integration suite never does.
import type { OciProcess, OciResources } from './spec/types.js';
import type { CommandIo } from '../stream/backend.js';

/** Which container, run by which handler, from which bundle. */
export interface RuntimeRef {
  id: string;
  /** resolved runtime handler name (runc, crun, …) */
  handler: string;
  /** bundle dir: config.json plus conmon's files (pidfile, ctl fifo, attach socket, persist dir) */
  bundle: string;
}

export interface CreateOptions extends RuntimeRef {
  /** container name, for conmon's logs */
  name: string;
  /** CRI log file; undefined = output goes to a file in the bundle nobody reads */
  logPath?: string;
  stdin: boolean;
  tty: boolean;
}

/** What the runtime says about a container (`runc state`). */
export interface RuntimeState {
  status: 'creating' | 'created' | 'running' | 'stopped' | 'paused';
  pid: number;
}

/** What the monitor (conmon) recorded when the container's process ended. */
export interface ExitInfo {
  code: number;
  /** Unix time in ms when the exit was recorded (the exit file's mtime). */
  at: number;
  oomKilled: boolean;
}

export interface ExecOptions {
  /** the container's process (user, env, cwd, capabilities …) with args replaced */
  process: OciProcess;
  /** 0 = no timeout */
  timeoutMs: number;
  /** bytes kept of stdout and stderr together; the rest is read and dropped */
  maxOutputBytes: number;
  /** aborting kills the exec'd process (the caller went away) */
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  /** true when either stream hit maxOutputBytes */
  truncated: boolean;
}

export interface RuntimeDriver {
  /** Creates the container under its monitor; resolves with the container's pid once it exists. */
  create(opts: CreateOptions): Promise<{ pid: number }>;
  start(ref: RuntimeRef): Promise<void>;
  /** Signals the container's init; `all` signals every process in its cgroup. Not-running is not an error. */
  kill(ref: RuntimeRef, signal: string, all?: boolean): Promise<void>;
  /** Forgets the container in the runtime (force-kills it if needed). Idempotent. */
  delete(ref: RuntimeRef): Promise<void>;
  /** undefined when the runtime does not know the container. */
  state(ref: RuntimeRef): Promise<RuntimeState | undefined>;
  /** The recorded exit, once the monitor wrote it. */
  exit(ref: RuntimeRef): Promise<ExitInfo | undefined>;
  /** Whether the container's monitor still runs (false: it died, and no exit file will come). */
  monitorAlive(ref: RuntimeRef): Promise<boolean>;
  exec(ref: RuntimeRef, opts: ExecOptions): Promise<ExecResult>;
  /** Runs a process in the container wired to a streaming client (exec -it); resolves with its exit code. */
  execStreaming(ref: RuntimeRef, opts: { process: OciProcess; tty: boolean }, io: CommandIo): Promise<number>;
  /** Relays the container's stdio until it exits or the client detaches (io.signal); never stops it. */
  attach(ref: RuntimeRef, opts: { tty: boolean }, io: CommandIo): Promise<void>;
  update(ref: RuntimeRef, resources: OciResources): Promise<void>;
  /** Asks the monitor to reopen the CRI log file (after kubelet rotated it). */
  reopenLog(ref: RuntimeRef, logPath: string): Promise<void>;
  /** The unix socket conmon serves the container's stdio on (attach). */
  attachSocketPath(ref: RuntimeRef): string;
  /** The directory where exit files appear (one per container id), for watching. */
  readonly exitDir: string;
  /** Removes the monitor's leftovers for a container (its exit file). */
  cleanup(ref: RuntimeRef): Promise<void>;
}
