// Reads resource usage from cgroup files, v1 (one hierarchy per controller) and v2 (unified). Formulas as
// cAdvisor's, so numbers match what the kubelet shows for other runtimes:
//   working set = usage - inactive file  (v1: usage_in_bytes - total_inactive_file; v2: memory.current - inactive_file)
//   swap        = swap only             (v1: memsw.usage - usage; v2: memory.swap.current)
// Swap accounting off (no memsw / memory.swap files) reads as 0, never as missing.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';

export type CgroupLayout =
  | { version: 1; /** controller -> mount point, e.g. memory -> /sys/fs/cgroup/memory */ mounts: Map<string, string> }
  | { version: 2; mount: string };

/** Reads the host's cgroup mounts from /proc/self/mountinfo (v2 only when no v1 memory/cpuacct hierarchy exists). */
export async function detectCgroupLayout(mountinfo = '/proc/self/mountinfo'): Promise<CgroupLayout> {
  return layoutFromMountinfo(await readFile(mountinfo, 'utf8'));
}

export function layoutFromMountinfo(text: string): CgroupLayout {
  const mounts = new Map<string, string>();
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const [fstype, , superOpts] = line.slice(sep + 3).split(' ');
    const mountPoint = left[4];
    if (!mountPoint) continue;
    if (fstype === 'cgroup2') unified ??= mountPoint;
    if (fstype === 'cgroup') {
      for (const opt of (superOpts ?? '').split(',')) {
        if (['cpu', 'cpuacct', 'memory', 'pids', 'cpuset', 'blkio', 'devices', 'freezer', 'hugetlb'].includes(opt) && !mounts.has(opt)) mounts.set(opt, mountPoint);
      }
    }
  }
  if (mounts.has('memory') || mounts.has('cpuacct')) return { version: 1, mounts };
  if (unified) return { version: 2, mount: unified };
  return { version: 1, mounts };
}

/** The cgroup path of a process: the memory controller's on v1, the unified one on v2. */
export async function cgroupPathOfPid(layout: CgroupLayout, pid: number): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [id, controllers, ...rest] = line.split(':');
    const path = rest.join(':');
    if (layout.version === 2 && id === '0' && controllers === '') return path;
    if (layout.version === 1 && controllers?.split(',').includes('memory')) return path;
  }
  return undefined;
}

export interface CgroupUsage {
  /** Cumulative CPU time of all tasks, in nanoseconds. */
  cpuUsageNs: bigint;
  memory: {
    usage: bigint;
    workingSet: bigint;
    rss: bigint;
    pageFaults: bigint;
    majorPageFaults: bigint;
    /** undefined = no limit */
    limit?: bigint;
  };
  swap: {
    usage: bigint;
    /** undefined = no limit (swap accounting off or unlimited) */
    limit?: bigint;
  };
  processCount: bigint;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENODEV' || errnoCode(err) === 'EOPNOTSUPP') return undefined;
    throw err;
  }
}

async function readInt(path: string): Promise<bigint | undefined> {
  const t = (await readText(path))?.trim();
  if (t === undefined || t === '') return undefined;
  if (t === 'max') return undefined;
  return BigInt(t);
}

/** "key value" lines (memory.stat, cpu.stat) into a map. */
export function parseFlatKeyed(text: string | undefined): Map<string, bigint> {
  const m = new Map<string, bigint>();
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v && /^\d+$/.test(v)) m.set(k, BigInt(v));
  }
  return m;
}

/** v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size). */
const V1_UNLIMITED = 1n << 62n;

function sat(a: bigint, b: bigint): bigint {
  return a > b ? a - b : 0n;
}

/** True when the cgroup exists (its memory/unified dir has a cgroup.procs). */
export async function cgroupExists(layout: CgroupLayout, path: string): Promise<boolean> {
  const base = layout.version === 2 ? layout.mount : layout.mounts.get('memory') ?? layout.mounts.get('cpuacct');
  if (!base) return false;
  return (await readText(join(base, path, 'cgroup.procs'))) !== undefined;
}

export async function readCgroupUsage(layout: CgroupLayout, path: string): Promise<CgroupUsage> {
  return layout.version === 2 ? readV2(join(layout.mount, path)) : readV1(layout.mounts, path);
}

async function readV2(dir: string): Promise<CgroupUsage> {
  const [cpuStat, memStat, current, max, swapCurrent, swapMax, pids] = await Promise.all([
    readText(join(dir, 'cpu.stat')),
    readText(join(dir, 'memory.stat')),
    readInt(join(dir, 'memory.current')),
    readInt(join(dir, 'memory.max')),
    readInt(join(dir, 'memory.swap.current')),
    readInt(join(dir, 'memory.swap.max')),
    readInt(join(dir, 'pids.current')),
  ]);
  const cpu = parseFlatKeyed(cpuStat);
  const mem = parseFlatKeyed(memStat);
  const usage = current ?? 0n;
  return {
    cpuUsageNs: (cpu.get('usage_usec') ?? 0n) * 1000n,
    memory: {
      usage,
      workingSet: sat(usage, mem.get('inactive_file') ?? 0n),
      rss: mem.get('anon') ?? 0n,
      pageFaults: mem.get('pgfault') ?? 0n,
      majorPageFaults: mem.get('pgmajfault') ?? 0n,
      limit: max,
    },
    swap: { usage: swapCurrent ?? 0n, limit: swapMax },
    processCount: pids ?? (await countProcs(join(dir, 'cgroup.procs'))),
  };
}

async function countProcs(file: string): Promise<bigint> {
  const t = await readText(file);
  return BigInt((t ?? '').split('\n').filter((l) => l.trim() !== '').length);
}

async function readV1(mounts: Map<string, string>, path: string): Promise<CgroupUsage> {
  const at = (ctrl: string, file: string) => {
    const base = mounts.get(ctrl);
    return base === undefined ? undefined : join(base, path, file);
  };
  const maybe = (ctrl: string, file: string, read: (p: string) => Promise<bigint | undefined>) => {
    const p = at(ctrl, file);
    return p === undefined ? Promise.resolve(undefined) : read(p);
  };
  const statPath = at('memory', 'memory.stat');
  const [cpuNs, usage, limit, memsw, memswLimit, memStat, pids] = await Promise.all([
    maybe('cpuacct', 'cpuacct.usage', readInt),
    maybe('memory', 'memory.usage_in_bytes', readInt),
    maybe('memory', 'memory.limit_in_bytes', readInt),
    maybe('memory', 'memory.memsw.usage_in_bytes', readInt),
    maybe('memory', 'memory.memsw.limit_in_bytes', readInt),
    statPath === undefined ? undefined : readText(statPath),
    maybe('pids', 'pids.current', readInt),
  ]);
  const mem = parseFlatKeyed(memStat);
  const used = usage ?? 0n;
  const memLimit = limit !== undefined && limit < V1_UNLIMITED ? limit : undefined;
  // memsw.limit counts memory + swap; the swap part is what exceeds the memory limit.
  const swapLimit = memswLimit !== undefined && memswLimit < V1_UNLIMITED && memLimit !== undefined ? sat(memswLimit, memLimit) : undefined;
  const memProcs = at('memory', 'cgroup.procs');
  return {
    cpuUsageNs: cpuNs ?? 0n,
    memory: {
      usage: used,
      workingSet: sat(used, mem.get('total_inactive_file') ?? 0n),
      rss: mem.get('total_rss') ?? 0n,
      pageFaults: mem.get('total_pgfault') ?? 0n,
      majorPageFaults: mem.get('total_pgmajfault') ?? 0n,
      limit: memLimit,
    },
    swap: { usage: memsw === undefined ? 0n : sat(memsw, used), limit: swapLimit },
    processCount: pids ?? (memProcs === undefined ? 0n : await countProcs(memProcs)),
  };
}

/** Host swap free (bytes), for "available" when a cgroup's swap is unlimited. */
export async function hostSwapFree(meminfo = '/proc/meminfo'): Promise<bigint> {
  const m = /^SwapFree:\s+(\d+) kB/m.exec((await readText(meminfo)) ?? '');
  return m ? BigInt(m[1]) * 1024n : 0n;
}
