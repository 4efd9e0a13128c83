// A pod's namespaces without a pause container: net/ipc/uts are made by `unshare` and pinned by bind
// mounts on files (they outlive the short command); a pod-shared PID namespace needs a live init, so
// `catatonit -P` holds it (pinned too, and killed on stop, which ends every process in it).
import { spawn } from 'node:child_process';
import { open, readFile, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runChecked } from '../util/exec.js';
import { isMountPoint, unmountAll } from './mounts.js';
import { internal, errnoCode } from '../errors.js';

const NS_TIMEOUT_MS = 10_000;
const INIT_START_TIMEOUT_MS = 5_000;

export type PinnedKind = 'net' | 'ipc' | 'uts';

export interface PinRequest {
  dir: string;
  kinds: PinnedKind[];
  /** set in the new UTS namespace (any bytes the kernel accepts; not passed through `hostname`) */
  hostname?: string;
}

async function touch(path: string): Promise<void> {
  const fh = await open(path, 'a', 0o444);
  await fh.close();
}

/** Creates and pins the requested namespaces as files `<dir>/<kind>`; brings `lo` up in a new netns. */
export async function pinNamespaces(req: PinRequest): Promise<Record<PinnedKind, string | undefined>> {
  const out: Record<PinnedKind, string | undefined> = { net: undefined, ipc: undefined, uts: undefined };
  if (req.kinds.length === 0) return out;
  await mkdir(req.dir, { recursive: true, mode: 0o711 });
  const args: string[] = [];
  for (const kind of req.kinds) {
    const file = join(req.dir, kind);
    await touch(file);
    args.push(`--${kind}=${file}`);
    out[kind] = file;
  }
  // Runs inside the new namespaces; values arrive as positional args, never spliced into the script.
  const script = [
    req.kinds.includes('uts') && req.hostname !== undefined ? `printf '%s' "$1" > /proc/sys/kernel/hostname || exit 1` : ':',
    req.kinds.includes('net') ? 'ip link set lo up || exit 1' : ':',
  ].join('\n');
  await runChecked('unshare', [...args, '--', 'sh', '-c', script, 'sh', req.hostname ?? ''], { timeoutMs: NS_TIMEOUT_MS });
  return out;
}

/** Unpins a namespace file (unmount, delete). Missing is fine. */
export async function unpinNamespace(file: string): Promise<void> {
  await unmountAll(file);
  await rm(file, { force: true });
}

/** A namespace pin is alive when its file is still a mount point (of nsfs). */
export async function isPinned(file: string): Promise<boolean> {
  return isMountPoint(file);
}

/** Linux start time of a process (clock ticks since boot), to tell a pid from a reused one. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19]; // field 22 overall
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return undefined;
    throw err;
  }
}

export interface PidInit {
  /** pinned pid namespace file */
  file: string;
  /** host pid of catatonit (pid 1 inside) */
  pid: number;
  startTime: string;
}

async function childrenOf(pid: number): Promise<number[]> {
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return text.split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Starts `catatonit -P` as pid 1 of a new PID namespace (joined to the pod's other namespaces), pinned
 * at `<dir>/pid`. It is detached from the daemon: it keeps running across daemon restarts.
 */
export async function startPidInit(dir: string, join_: { net?: string; ipc?: string; uts?: string }, catatonit: string): Promise<PidInit> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const file = join(dir, 'pid');
  await touch(file);
  const enter = Object.entries(join_)
    .filter(([, path]) => path !== undefined)
    .map(([kind, path]) => `--${kind}=${path}`);
  const unshareArgs = [`--pid=${file}`, '--fork', '--kill-child', catatonit, '-P'];
  const child =
    enter.length > 0
      ? spawn('nsenter', [...enter, '--', 'unshare', ...unshareArgs], { detached: true, stdio: 'ignore' })
      : spawn('unshare', unshareArgs, { detached: true, stdio: 'ignore' });
  child.on('error', () => undefined);
  child.unref();
  const holder = child.pid;
  if (holder === undefined) throw internal('cannot start the pod init (catatonit)', { path: file });
  const deadline = Date.now() + INIT_START_TIMEOUT_MS;
  for (;;) {
    const [pid] = await childrenOf(holder);
    if (pid !== undefined && (await isMountPoint(file))) {
      const startTime = await processStartTime(pid);
      if (startTime !== undefined) return { file, pid, startTime };
    }
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      try {
        process.kill(-holder, 'SIGKILL');
      } catch {
        // already gone
      }
      await unpinNamespace(file);
      throw internal(`the pod init (catatonit -P) did not start (exit ${child.exitCode ?? child.signalCode ?? 'timeout'})`, { path: file });
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Whether the recorded init still runs (same pid and same start time). */
export async function pidInitAlive(pid: number, startTime: string): Promise<boolean> {
  return (await processStartTime(pid)) === startTime;
}

/** Kills the pod init (and so every process of its PID namespace) and waits until it is gone. */
export async function stopPidInit(pid: number, startTime: string): Promise<void> {
  if (!(await pidInitAlive(pid, startTime))) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline && (await pidInitAlive(pid, startTime))) {
    // a zombie keeps /proc/<pid>/stat: state 'Z' means it is dead already
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}
