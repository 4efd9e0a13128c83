// RuntimeDriver over conmon (Debian's 2.1.6) and a runc-compatible runtime (runc, crun).
//
// conmon double-forks into its own session, so containers outlive the daemon; it owns the container's
// stdio, writes the CRI log (k8s-file driver), the exit file (<exitDir>/<id>) and, in the persist dir,
// `exit` and `oom`. We learn the container's pid from conmon's sync socket (one JSON message, read with
// a timeout; never waited on for EOF). Short runtime commands (start, kill, state, delete, update) go
// through src/util/exec.ts with timeouts; their stdio is not inherited by the container.
import { spawn } from 'node:child_process';
import { open, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import type { RuntimeHandlers } from './runtime-handlers.js';
import type { OciResources } from './spec/types.js';
import type { CreateOptions, ExecOptions, ExecResult, ExitInfo, RuntimeDriver, RuntimeRef, RuntimeState } from './runtime-driver.js';
import { run } from '../util/exec.js';
import { lookPath } from '../util/which.js';
import { deadlineExceeded, errnoCode, errorMessage, failedPrecondition, internal } from '../errors.js';
import { runExec } from './exec-sync.js';
import { runStreamingExec } from './exec-stream.js';
import { attachConmon } from './attach.js';
import type { OciProcess } from './spec/types.js';
import type { CommandIo } from '../stream/backend.js';
import { parseConmonSync } from './conmon-sync.js';

/** conmon reports the container pid once the runtime's create returned; runc create takes ~50 ms. */
const CREATE_TIMEOUT_MS = 60_000;
const RUNTIME_CALL_TIMEOUT_MS = 30_000;

export interface ConmonDriverOptions {
  conmonPath: string;
  /** <state>/exits: conmon writes one file per container here when it exits */
  exitDir: string;
  /** <state>/attach: conmon symlinks each container's attach dir here (short socket paths) */
  socketDir: string;
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** How long conmon gets to report the container's pid (default CREATE_TIMEOUT_MS; tests shorten it). */
  createTimeoutMs?: number;
}

export class ConmonDriver implements RuntimeDriver {
  readonly exitDir: string;
  private conmonBinary?: string;
  /** Handler name -> its binary, looked up once (a PATH walk is several threadpool calls per runtime call). */
  private readonly runtimeBinaries = new Map<string, string>();

  constructor(
    private readonly handlers: RuntimeHandlers,
    private readonly opts: ConmonDriverOptions,
  ) {
    this.exitDir = opts.exitDir;
  }

  private async conmon(): Promise<string> {
    this.conmonBinary ??= await lookPath(this.opts.conmonPath);
    if (!this.conmonBinary) throw failedPrecondition(`conmon ("${this.opts.conmonPath}") not found on PATH; install the conmon package`);
    return this.conmonBinary;
  }

  /** The runtime binary and its global args (--root, systemd cgroups) for a handler. */
  private async runtime(handler: string): Promise<{ binary: string; global: string[] }> {
    const h = this.handlers.config_(handler);
    let binary = this.runtimeBinaries.get(handler);
    if (binary === undefined) this.runtimeBinaries.set(handler, (binary = (await this.handlers.resolve(handler)).binary));
    const global = [`--root=${h.root}`];
    if (this.opts.cgroupDriver === 'systemd') global.push('--systemd-cgroup');
    return { binary, global };
  }

  private async call(ref: RuntimeRef, args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const rt = await this.runtime(ref.handler);
    return run(rt.binary, [...rt.global, ...args], { timeoutMs: RUNTIME_CALL_TIMEOUT_MS, input });
  }

  private persistDir(ref: RuntimeRef): string {
    return join(ref.bundle, 'persist');
  }

  async create(o: CreateOptions): Promise<{ pid: number }> {
    const conmon = await this.conmon();
    const rt = await this.runtime(o.handler);
    await Promise.all([mkdir(this.exitDir, { recursive: true }), mkdir(this.opts.socketDir, { recursive: true }), mkdir(this.persistDir(o), { recursive: true })]);
    await rm(join(this.exitDir, o.id), { force: true });
    const logPath = o.logPath ?? join(o.bundle, 'output.log');
    const args = [
      '--api-version', '1',
      '-b', o.bundle,
      '-c', o.id,
      '-u', o.id,
      '-n', o.name,
      '-r', rt.binary,
      ...rt.global.flatMap((a) => ['--runtime-arg', a]),
      '--exit-dir', this.exitDir,
      '--persist-dir', this.persistDir(o),
      '-p', join(o.bundle, 'pidfile'),
      '-P', join(o.bundle, 'conmon.pid'),
      '-l', `k8s-file:${logPath}`,
      '--socket-dir-path', this.opts.socketDir,
      '--log-level', 'error',
    ];
    if (this.opts.cgroupDriver === 'systemd') args.push('-s');
    if (o.stdin) args.push('-i');
    if (o.tty) args.push('-t');
    // conmon's own complaints go to a file in the bundle: a file, unlike a pipe, never blocks anyone.
    const errFile = await open(join(o.bundle, 'conmon.log'), 'a');
    try {
      const pid = await new Promise<number>((resolve, reject) => {
        const child = spawn(conmon, args, {
          cwd: o.bundle,
          detached: true,
          stdio: ['ignore', 'ignore', errFile.fd, 'pipe'],
          env: { ...process.env, _OCI_SYNCPIPE: '3' },
        });
        const sync = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
        let buf = '';
        let settled = false;
        const finish = (err: Error | undefined, pid?: number) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          sync.destroy();
          if (!err) return resolve(pid!);
          // conmon (detached, in a session of its own) may still be creating the container: end it and
          // whatever runtime state it made before the caller deletes the bundle under it.
          void this.abandonCreate(o, child.pid).finally(() => reject(err));
        };
        const timeoutMs = this.opts.createTimeoutMs ?? CREATE_TIMEOUT_MS;
        const timer = setTimeout(() => finish(deadlineExceeded(`conmon did not report the container within ${timeoutMs} ms`, { container: o.id })), timeoutMs);
        sync.on('data', (d: Buffer) => {
          buf += d.toString('utf8');
          const nl = buf.indexOf('\n');
          if (nl < 0) return;
          try {
            const m = parseConmonSync(buf.slice(0, nl));
            if (!(m.value > 0)) finish(internal(`creating the container failed: ${(m.message ?? 'no reason given').trim()}`, { container: o.id, handler: o.handler }));
            else finish(undefined, m.value);
          } catch (err) {
            finish(internal(`conmon sent an unreadable sync message: ${errorMessage(err)}`, { container: o.id }));
          }
        });
        sync.on('error', () => undefined);
        // EOF before a message: conmon died (bad flag, runtime missing, …); its reason is in conmon.log.
        sync.on('end', () => {
          void readFile(join(o.bundle, 'conmon.log'), 'utf8')
            .catch(() => '')
            .then((why) => finish(internal(`conmon exited without creating the container: ${why.trim().slice(-2000) || 'no output'}`, { container: o.id })));
        });
        child.once('error', (e) => finish(internal(`cannot run conmon: ${e.message}`, { container: o.id })));
        child.unref();
      });
      return { pid };
    } finally {
      await errFile.close();
    }
  }

  /**
   * After a failed create: SIGKILL conmon's process groups (the one we spawned, and the daemonized one
   * named in conmon.pid; the runtime's create runs in it) and have the runtime forget the container.
   * Best effort: every step tolerates "already gone".
   */
  private async abandonCreate(o: CreateOptions, spawnedPid: number | undefined): Promise<void> {
    const killGroup = (pid: number) => {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    };
    if (spawnedPid) killGroup(spawnedPid);
    const monitor = Number((await readFile(join(o.bundle, 'conmon.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(monitor) && monitor > 1) killGroup(monitor);
    await this.delete(o).catch(() => undefined);
  }

  async start(ref: RuntimeRef): Promise<void> {
    const res = await this.call(ref, ['start', ref.id]);
    if (res.code !== 0) throw internal(`starting the container failed: ${(res.stderr || res.stdout).trim().slice(0, 2000)}`, { container: ref.id });
  }

  async kill(ref: RuntimeRef, signal: string, all = false): Promise<void> {
    const res = await this.call(ref, ['kill', ...(all ? ['--all'] : []), ref.id, signal]);
    if (res.code === 0) return;
    const why = (res.stderr || res.stdout).trim();
    // Already gone: the caller waits for the exit file, which tells the truth.
    if (/not running|does not exist|no such process|process already finished|container not found|stopped/i.test(why)) return;
    throw internal(`signalling the container (${signal}) failed: ${why.slice(0, 2000)}`, { container: ref.id });
  }

  async delete(ref: RuntimeRef): Promise<void> {
    const res = await this.call(ref, ['delete', '--force', ref.id]);
    if (res.code === 0) return;
    const why = (res.stderr || res.stdout).trim();
    if (/does not exist|not found|no such file/i.test(why)) return;
    throw internal(`deleting the container in the runtime failed: ${why.slice(0, 2000)}`, { container: ref.id });
  }

  async state(ref: RuntimeRef): Promise<RuntimeState | undefined> {
    const res = await this.call(ref, ['state', ref.id]);
    if (res.code !== 0) {
      if (/does not exist|not found|no such file/i.test(res.stderr + res.stdout)) return undefined;
      throw internal(`runtime state failed: ${(res.stderr || res.stdout).trim().slice(0, 2000)}`, { container: ref.id });
    }
    const v = JSON.parse(res.stdout) as { status?: string; pid?: number };
    return { status: (v.status ?? 'stopped') as RuntimeState['status'], pid: v.pid ?? 0 };
  }

  async monitorAlive(ref: RuntimeRef): Promise<boolean> {
    const pid = Number((await readFile(join(ref.bundle, 'conmon.pid'), 'utf8').catch(() => '')).trim());
    // no pid file: conmon never got that far (create failed), nothing is watching
    if (!Number.isInteger(pid) || pid <= 1) return false;
    // the process with that pid must still be this container's conmon (pids are reused): the one started
    // with `-c <id>` and not for an exec (-e); its binary may have any name
    const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const c = args.indexOf('-c');
    return c > 0 && args[c + 1] === ref.id && !args.includes('-e');
  }

  async exit(ref: RuntimeRef): Promise<ExitInfo | undefined> {
    const file = join(this.exitDir, ref.id);
    let text: string;
    let at: number;
    try {
      [text, at] = await Promise.all([readFile(file, 'utf8'), stat(file).then((s) => s.mtimeMs)]);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
    const code = Number.parseInt(text.trim(), 10);
    // a file caught mid-write: not there yet as far as we are concerned
    if (!Number.isInteger(code)) return undefined;
    const oomKilled = await stat(join(this.persistDir(ref), 'oom')).then(
      () => true,
      () => false,
    );
    return { code, at: Math.floor(at), oomKilled };
  }

  async exec(ref: RuntimeRef, opts: ExecOptions): Promise<ExecResult> {
    const rt = await this.runtime(ref.handler);
    return runExec({ conmon: await this.conmon(), runtime: rt.binary, runtimeArgs: rt.global, id: ref.id, bundle: ref.bundle, socketDir: this.opts.socketDir }, opts);
  }

  async execStreaming(ref: RuntimeRef, opts: { process: OciProcess; tty: boolean }, io: CommandIo): Promise<number> {
    const rt = await this.runtime(ref.handler);
    return runStreamingExec({ binary: rt.binary, global: rt.global, id: ref.id, bundle: ref.bundle }, opts.process, opts.tty, io);
  }

  attach(ref: RuntimeRef, opts: { tty: boolean }, io: CommandIo): Promise<void> {
    return attachConmon({ id: ref.id, socketPath: this.attachSocketPath(ref), ctlPath: join(ref.bundle, 'ctl'), tty: opts.tty }, io);
  }

  async update(ref: RuntimeRef, resources: OciResources): Promise<void> {
    const file = join(ref.bundle, `update-${Date.now()}.json`);
    await writeFile(file, JSON.stringify(resources));
    try {
      const res = await this.call(ref, ['update', '--resources', file, ref.id]);
      if (res.code !== 0) throw internal(`updating container resources failed: ${(res.stderr || res.stdout).trim().slice(0, 2000)}`, { container: ref.id });
    } finally {
      await rm(file, { force: true });
    }
  }

  async reopenLog(ref: RuntimeRef, logPath: string): Promise<void> {
    // conmon reads "<type> <height> <width>\n" messages from the ctl fifo; type 2 = reopen the log file.
    // Non-blocking open: ENXIO means nobody reads the fifo (conmon is gone), not a hang.
    let fh;
    try {
      fh = await open(join(ref.bundle, 'ctl'), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    } catch (err) {
      throw failedPrecondition(`cannot reopen the log: the container's monitor is not running (${errnoCode(err) ?? errorMessage(err)})`, { container: ref.id });
    }
    try {
      await fh.write('2 0 0\n');
    } finally {
      await fh.close();
    }
    // conmon handles the message asynchronously: the new file exists once it did.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (await stat(logPath).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw deadlineExceeded('the container monitor did not reopen the log file within 5 s', { container: ref.id, path: logPath });
  }

  attachSocketPath(ref: RuntimeRef): string {
    return join(this.opts.socketDir, ref.id, 'attach');
  }

  async cleanup(ref: RuntimeRef): Promise<void> {
    await rm(join(this.exitDir, ref.id), { force: true });
    await rm(join(this.opts.socketDir, ref.id), { force: true });
  }
}
