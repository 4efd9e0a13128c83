// A pod's namespaces without a pause container: net/ipc/uts are made by `unshare` and pinned by bind
// mounts on files (they outlive the short command); a pod-shared PID namespace needs a live init, so
// `catatonit -P` holds it (pinned too, and killed on stop, which ends every process in it).
import { spawn } from 'node:child_process';
import { open, readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runChecked } from '../util/exec.js';
import { isMountPoint, unmountAll } from './mounts.js';
import { internal, errnoCode } from '../errors.js';
import type { IdMapping } from '../store/records.js';

const NS_TIMEOUT_MS = 10_000;
const INIT_START_TIMEOUT_MS = 5_000;

export type PinnedKind = 'net' | 'ipc' | 'uts';

export interface PinRequest {
  dir: string;
  kinds: PinnedKind[];
  /** set in the new UTS namespace (any bytes the kernel accepts; not passed through `hostname`) */
  hostname?: string;
  /**
   * A userns pod: a user namespace with these mappings is made and pinned too (`<dir>/user`), and the
   * other namespaces are made inside it, so they belong to it. A container's root may then join them
   * (runc 1.1 execs enter the user namespace first) and mount what they need (mqueue, sysfs).
   */
  userns?: { uidMappings: IdMapping[]; gidMappings: IdMapping[] };
}

async function touch(path: string): Promise<void> {
  const fh = await open(path, 'a', 0o444);
  await fh.close();
}

/** Creates and pins the requested namespaces as files `<dir>/<kind>`; brings `lo` up in a new netns. */
export async function pinNamespaces(req: PinRequest): Promise<Record<PinnedKind, string | undefined>> {
  if (req.userns) return pinInUserNamespace(req, req.userns);
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

/** "inside outside count" lines for /proc/<pid>/uid_map and gid_map. */
export function idMapText(maps: IdMapping[]): string {
  return maps.map((m) => `${m.containerId} ${m.hostId} ${m.size}\n`).join('');
}

/**
 * The user namespace variant of pinNamespaces: `unshare --user` with the other kinds (so they belong to
 * the new user namespace); `newuidmap` is not needed because we write the maps as root into /proc/<pid>/ of the unshared
 * process, which waits on stdin for it after setting up its namespaces (it has every capability in them
 * already as their creator, mapped or not).
 */
async function pinInUserNamespace(req: PinRequest, userns: NonNullable<PinRequest['userns']>): Promise<Record<PinnedKind | 'user', string | undefined>> {
  const out: Record<PinnedKind | 'user', string | undefined> = { net: undefined, ipc: undefined, uts: undefined, user: undefined };
  await mkdir(req.dir, { recursive: true, mode: 0o711 });
  // unshare's own pins fail (EPERM) together with --user here, so we bind-mount the namespaces ourselves
  // while the process still holds them
  const args: string[] = ['--user'];
  const kinds = ['user', ...req.kinds] as const;
  for (const kind of kinds) {
    await touch(join(req.dir, kind));
    if (kind !== 'user') args.push(`--${kind}`);
  }
  // The holder only waits: an exec inside a user namespace whose maps are not written yet drops every
  // capability, so the setup script runs afterwards, from the host side, through the pins.
  const child = spawn('unshare', [...args, '--', 'sh', '-c', 'echo ready; read -r _'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const timer = setTimeout(() => child.kill('SIGKILL'), NS_TIMEOUT_MS);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 4096)));
  const exited = new Promise<number | string>((resolve) => child.once('close', (code, sig) => resolve(code ?? sig ?? -1)));
  try {
    const ready = await new Promise<boolean>((resolve) => {
      child.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('ready') && resolve(true));
      void exited.then(() => resolve(false));
    });
    if (!ready || child.pid === undefined) throw internal(`unshare of the pod's user namespace failed (exit ${String(await exited)}): ${stderr.trim()}`, { path: req.dir });
    await writeFile(`/proc/${child.pid}/uid_map`, idMapText(userns.uidMappings));
    await writeFile(`/proc/${child.pid}/gid_map`, idMapText(userns.gidMappings));
    for (const kind of kinds) {
      const file = join(req.dir, kind);
      await runChecked('mount', ['--bind', `/proc/${child.pid}/ns/${kind}`, file], { timeoutMs: NS_TIMEOUT_MS });
      out[kind] = file;
    }
    child.stdin.end('\n');
    await exited;
    const script = [
      req.kinds.includes('uts') && req.hostname !== undefined ? `printf '%s' "$1" > /proc/sys/kernel/hostname || exit 1` : ':',
      req.kinds.includes('net') ? 'ip link set lo up || exit 1' : ':',
    ].join('\n');
    const enter = (['net', 'uts'] as const).filter((k) => out[k]).map((k) => `--${k}=${out[k]}`);
    if (enter.length > 0) await runChecked('nsenter', [...enter, '--', 'sh', '-c', script, 'sh', req.hostname ?? ''], { timeoutMs: NS_TIMEOUT_MS });
  } catch (err) {
    child.kill('SIGKILL');
    for (const kind of kinds) await unpinNamespace(join(req.dir, kind)).catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
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
export async function startPidInit(dir: string, join_: { net?: string; ipc?: string; uts?: string; user?: string }, catatonit: string): Promise<PidInit> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const file = join(dir, 'pid');
  await touch(file);
  const enter = Object.entries(join_)
    .filter(([, path]) => path !== undefined)
    .map(([kind, path]) => `--${kind}=${path}`);
  // Inside a pod's user namespace unshare may not mount its pin in the host's mount namespace: we pin it.
  const unshareArgs = [join_.user ? '--pid' : `--pid=${file}`, '--fork', '--kill-child', catatonit, '-P'];
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
    if (pid !== undefined && join_.user && !(await isMountPoint(file))) {
      await run('mount', ['--bind', `/proc/${pid}/ns/pid`, file], { timeoutMs: NS_TIMEOUT_MS });
    }
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

/** Whether the recorded init still runs: same pid, same start time, and not a zombie waiting to be reaped. */
export async function pidInitAlive(pid: number, startTime: string): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19] === startTime && rest[0] !== 'Z' && rest[0] !== 'X';
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
  while (Date.now() < deadline && (await pidInitAlive(pid, startTime))) await new Promise((r) => setTimeout(r, 5));
}
