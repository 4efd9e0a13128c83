// Stats readers: cgroup v2 from a fixture tree of real-format files, cgroup v1 against the live machine
// (a scratch cgroup with a process that allocates and spins), network parsing, CPU rate, and metrics
// that agree with the stats.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rmdir, writeFile, readFile, access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { layoutFromMountinfo, readCgroupUsage, detectCgroupLayout, cgroupPathOfPid, hostSwapFree, type CgroupLayout } from '../../src/stats/cgroup.js';
import { StatsService } from '../../src/stats/service.js';
import type { ContainerRecord, PodRecord } from '../../src/store/records.js';
import type { SkiffError } from '../../src/errors.js';
import { CpuRateTracker } from '../../src/stats/cpu-rate.js';
import { parseNetDev, readPodNetwork } from '../../src/stats/network.js';
import { StatsCollector, toContainerStats, toPodSandboxStats, type PodStatsTarget } from '../../src/stats/collector.js';
import { toPodSandboxMetrics, metricDescriptors } from '../../src/stats/metrics.js';
import { diskUsage } from '../../src/stats/disk-usage.js';

const V2_ROOT = resolve(import.meta.dirname, '../fixtures/cgroup-v2');
const v2: CgroupLayout = { version: 2, mount: V2_ROOT };

describe('cgroup layout', () => {
  it('finds v1 controllers (separate or combined mounts) and v2', () => {
    const hybrid = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    const l = layoutFromMountinfo(hybrid);
    expect(l.version).toBe(1);
    if (l.version === 1) {
      expect(l.mounts.get('cpuacct')).toBe('/sys/fs/cgroup/cpu,cpuacct');
      expect(l.mounts.get('memory')).toBe('/sys/fs/cgroup/memory');
    }
    expect(layoutFromMountinfo('25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate')).toEqual({ version: 2, mount: '/sys/fs/cgroup' });
  });
});

describe('cgroup v2 (fixture tree)', () => {
  it('reads cpu, memory (working set = current - inactive_file), swap and pids', async () => {
    const u = await readCgroupUsage(v2, '/kubepods/podabc/ctr1');
    expect(u.cpuUsageNs).toBe(2_500_000_000n);
    expect(u.memory).toEqual({ usage: 52428800n, workingSet: 52428800n - 12582912n, rss: 31457280n, pageFaults: 12345n, majorPageFaults: 7n, limit: 104857600n });
    expect(u.swap).toEqual({ usage: 4096n, limit: undefined });
    expect(u.processCount).toBe(3n);
  });

  it('renders ContainerStats with swap present and available = limit - working set', async () => {
    const c = new StatsCollector(v2);
    const s = toContainerStats(await c.container({ id: 'c1', podId: 'p', metadata: { name: 'app', attempt: 0 }, labels: {}, annotations: {}, cgroupPath: '/kubepods/podabc/ctr1' }));
    expect(s.memory!.working_set_bytes).toEqual({ value: String(52428800 - 12582912) });
    expect(s.memory!.available_bytes).toEqual({ value: String(104857600 - (52428800 - 12582912)) });
    expect(s.cpu!.usage_core_nano_seconds).toEqual({ value: '2500000000' });
    expect(s.swap!.swap_usage_bytes).toEqual({ value: '4096' });
    // memory.swap.max is "max" in the fixture: available is the host's free swap.
    expect(s.swap!.swap_available_bytes).toEqual({ value: String(await hostSwapFree()) });
  });

  it('gives zero (not missing) usage and swap for a container without a cgroup', async () => {
    const s = toContainerStats(await new StatsCollector(v2).container({ id: 'gone', podId: 'p', metadata: { name: 'x' }, labels: {}, annotations: {}, cgroupPath: '/nope' }));
    expect(s.swap).toMatchObject({ swap_usage_bytes: { value: '0' }, swap_available_bytes: { value: '0' } });
    expect(s.memory!.working_set_bytes).toEqual({ value: '0' });
  });

  it('makes pod stats and metrics from the same sample', async () => {
    const target: PodStatsTarget = {
      id: 'podabc',
      metadata: { name: 'web', namespace: 'ns1', uid: 'u1', attempt: 0 },
      labels: {},
      annotations: {},
      cgroupPath: '/kubepods/podabc',
      containers: [{ id: 'c1', podId: 'podabc', metadata: { name: 'app', attempt: 0 }, labels: {}, annotations: {}, image: 'busybox', cgroupPath: '/kubepods/podabc/ctr1' }],
    };
    const sample = await new StatsCollector(v2).pod(target);
    const stats = toPodSandboxStats(sample);
    const metrics = toPodSandboxMetrics(sample);
    expect(stats.linux!.memory!.working_set_bytes).toEqual({ value: String(60000000 - 15000000) });
    expect(stats.linux!.process!.process_count).toEqual({ value: '4' });
    expect(stats.linux!.network).toBeNull(); // host network: no netns of its own
    const ws = metrics.container_metrics![0].metrics!.find((m) => m.name === 'container_memory_working_set_bytes')!;
    expect(ws.value).toEqual(stats.linux!.containers![0].memory!.working_set_bytes);
    expect(ws.label_values).toEqual(['app', '/kubepods/podabc/ctr1', 'busybox', 'k8s_app_web_ns1_u1_0', 'ns1', 'web']);
    const cpu = metrics.metrics!.find((m) => m.name === 'container_cpu_usage_seconds_total')!;
    expect([cpu.metric_type, cpu.value]).toEqual(['COUNTER', { value: '3' }]);
    // every metric's labels match its descriptor
    const keys = new Map(metricDescriptors().map((d) => [d.name, d.label_keys!.length]));
    for (const m of [...metrics.metrics!, ...metrics.container_metrics!.flatMap((c) => c.metrics!)]) expect(m.label_values!.length).toBe(keys.get(m.name));
  });
});

describe('CPU rate', () => {
  it('computes nano cores over the window since the previous sample', () => {
    const t = new CpuRateTracker();
    expect(t.observe('a', 0n, 0n)).toBeUndefined();
    expect(t.observe('a', 500_000_000n, 1_000_000_000n)).toBe(500_000_000n); // half a core
    expect(t.observe('a', 500_000_001n, 1_010_000_000n)).toBe(500_000_000n); // too short a window: last rate
    t.retain(new Set());
    expect(t.observe('a', 600_000_000n, 2_000_000_000n)).toBeUndefined();
  });
});

describe('network counters', () => {
  const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0
  eth0:  987654     321    2    0    0     0          0         0   123456     111    1    0    0     0       0          0
`;
  it('parses /proc/net/dev without loopback', () => {
    expect(parseNetDev(netDev)).toEqual([{ name: 'eth0', rxBytes: 987654n, rxErrors: 2n, txBytes: 123456n, txErrors: 1n }]);
  });

  it('reads a live netns through a pid', async () => {
    const ifaces = await readPodNetwork({ pid: process.pid });
    expect(Array.isArray(ifaces)).toBe(true);
  });
});

describe('disk usage', () => {
  it('counts bytes and inodes of a tree', async () => {
    const dir = resolve(V2_ROOT, 'kubepods');
    const u = (await diskUsage(dir))!;
    expect(u.inodes).toBeGreaterThan(15n);
    expect(u.bytes).toBeGreaterThan(0n);
    expect(await diskUsage('/nonexistent-skiff')).toBeUndefined();
  });
});

// cgroup v1 on this machine: a scratch cgroup, a process that allocates and spins on command.
const live = await detectCgroupLayout();
const liveV1 = live.version === 1 && live.mounts.has('memory') && live.mounts.has('cpuacct');
describe.skipIf(!liveV1)('cgroup v1 (live machine)', () => {
  const name = `/skiff-test-k129-${randomBytes(4).toString('hex')}`;
  const dirs = live.version === 1 ? ['memory', 'cpuacct', 'pids'].filter((c) => live.mounts.has(c)).map((c) => join(live.mounts.get(c)!, name)) : [];
  let child: ChildProcess | undefined;
  afterAll(async () => {
    child?.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    for (const d of dirs) await rmdir(d).catch(() => undefined);
  });

  const command = async (c: ChildProcess, cmd: string) => {
    const done = new Promise<void>((r) => c.stdout!.once('data', () => r()));
    c.stdin!.write(`${cmd}\n`);
    await done;
  };

  it('shows memory grow when the process allocates and CPU rise when it spins; swap present', async () => {
    for (const d of dirs) await mkdir(d);
    const script = `
      const rl = require('readline').createInterface({ input: process.stdin });
      const keep = [];
      rl.on('line', (l) => {
        if (l === 'alloc') keep.push(Buffer.alloc(96 << 20, 7));
        // 400 ms of CPU time, not of wall time: on a busy machine the loop gets only part of a core
        if (l === 'spin') { const start = process.cpuUsage(); const used = () => { const u = process.cpuUsage(start); return (u.user + u.system) / 1000; }; while (used() < 400); }
        process.stdout.write('ok\\n');
      });
      process.stdout.write('ok\\n');`;
    child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((r) => child!.stdout!.once('data', () => r()));
    for (const d of dirs) await writeFile(join(d, 'cgroup.procs'), String(child.pid));
    expect(await cgroupPathOfPid(live, child.pid!)).toBe(name);

    const collector = new StatsCollector(live);
    const target = { id: 'live', podId: 'p', metadata: { name: 'live' }, labels: {}, annotations: {}, pid: child.pid };
    const before = toContainerStats(await collector.container(target));
    await command(child, 'alloc');
    await command(child, 'spin');
    const after = toContainerStats(await collector.container(target));
    const n = (v: { value?: unknown } | null | undefined) => BigInt(String(v?.value as string | undefined ?? 0));
    expect(n(after.memory!.working_set_bytes) - n(before.memory!.working_set_bytes)).toBeGreaterThan(80n << 20n);
    expect(n(after.memory!.usage_bytes)).toBeGreaterThanOrEqual(n(after.memory!.working_set_bytes));
    expect(n(after.cpu!.usage_core_nano_seconds) - n(before.cpu!.usage_core_nano_seconds)).toBeGreaterThan(300_000_000n);
    // a rate over the wall-clock window between the samples: well above idle even when sharing the CPU
    expect(n(after.cpu!.usage_nano_cores)).toBeGreaterThan(100_000_000n);
    expect(after.swap!.swap_usage_bytes).not.toBeNull();
    expect(after.swap!.swap_available_bytes).not.toBeNull();
    const hasMemsw = await access(join(dirs[0], 'memory.memsw.usage_in_bytes')).then(() => true, () => false);
    if (!hasMemsw || /SwapTotal:\s+0 kB/.test(await readFile('/proc/meminfo', 'utf8'))) expect(after.swap!.swap_usage_bytes).toEqual({ value: '0' });
  });
});

describe('StatsService lookups', () => {
  // The same codes as every other rpc taking an ID (src/util/id-prefix.ts).
  it('an ambiguous ID prefix is INVALID_ARGUMENT, an unknown ID NOT_FOUND', async () => {
    const svc = new StatsService({ cgroupDriver: 'cgroupfs' });
    const recs = [{ id: 'abc1' }, { id: 'abc2' }];
    svc.setRecords({ pods: () => recs as unknown as PodRecord[], containers: () => recs as unknown as ContainerRecord[] });
    const kind = (p: Promise<unknown>) => p.then(() => 'ok', (e: SkiffError) => e.kind);
    expect(await kind(svc.containerStats('abc'))).toBe('invalid_argument');
    expect(await kind(svc.podSandboxStats('abc'))).toBe('invalid_argument');
    expect(await kind(svc.containerStats('zzz'))).toBe('not_found');
    expect(await kind(svc.podSandboxStats('zzz'))).toBe('not_found');
  });
});
