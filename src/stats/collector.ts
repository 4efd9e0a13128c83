// Collects usage samples for containers and pods, and renders them as CRI stats messages. The metrics
// rpcs render the same samples (src/stats/metrics.ts), so both always agree.
import type { ContainerMetadata } from '../gen/runtime/v1/ContainerMetadata.js';
import type { PodSandboxMetadata } from '../gen/runtime/v1/PodSandboxMetadata.js';
import type { ContainerStats } from '../gen/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from '../gen/runtime/v1/PodSandboxStats.js';
import type { UInt64Value } from '../gen/runtime/v1/UInt64Value.js';
import { cgroupExists, cgroupPathOfPid, detectCgroupLayout, hostSwapFree, readCgroupUsage, type CgroupLayout, type CgroupUsage } from './cgroup.js';
import { CpuRateTracker } from './cpu-rate.js';
import { readPodNetwork, type InterfaceCounters } from './network.js';
import { diskUsage, type DiskUsage } from './disk-usage.js';
import { nowNanos } from '../events/bus.js';

export interface ContainerStatsTarget {
  id: string;
  podId: string;
  metadata: ContainerMetadata;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** The image the container runs (reference as requested), for metric labels. */
  image?: string;
  /** Host pid of the container's init; its cgroup is read from /proc/<pid>/cgroup when cgroupPath is absent. */
  pid?: number;
  cgroupPath?: string;
  /** Directory holding the container's own writes (overlay upper dir), and the mount point it lives on. */
  writableLayer?: { dir: string; mountpoint: string };
}

export interface PodStatsTarget {
  id: string;
  metadata: PodSandboxMetadata;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  cgroupPath?: string;
  /** Where to read the pod's network counters; undefined for host-network pods. */
  network?: { pid?: number; netnsPath?: string };
  containers: ContainerStatsTarget[];
}

export interface ContainerSample {
  target: ContainerStatsTarget;
  /** Unix ns, decimal string */
  timestamp: string;
  /** undefined when the container has no cgroup (not running) */
  usage?: CgroupUsage;
  nanoCores?: bigint;
  swapAvailable: bigint;
  disk?: DiskUsage;
}

export interface PodSample {
  target: PodStatsTarget;
  timestamp: string;
  usage?: CgroupUsage;
  nanoCores?: bigint;
  swapAvailable: bigint;
  network?: InterfaceCounters[];
  containers: ContainerSample[];
}

/** The interface the kubelet treats as the pod's main one. */
export const DEFAULT_INTERFACE = 'eth0';

export class StatsCollector {
  private layout?: Promise<CgroupLayout>;
  private readonly cpu = new CpuRateTracker();

  constructor(private readonly layoutOverride?: CgroupLayout) {}

  private getLayout(): Promise<CgroupLayout> {
    this.layout ??= this.layoutOverride ? Promise.resolve(this.layoutOverride) : detectCgroupLayout();
    return this.layout;
  }

  private async sampleCgroup(key: string, path: string | undefined): Promise<{ usage?: CgroupUsage; nanoCores?: bigint; swapAvailable: bigint }> {
    const layout = await this.getLayout();
    if (path === undefined || !(await cgroupExists(layout, path))) return { swapAvailable: 0n };
    const usage = await readCgroupUsage(layout, path);
    const nanoCores = this.cpu.observe(key, usage.cpuUsageNs);
    const swapAvailable = usage.swap.limit !== undefined ? (usage.swap.limit > usage.swap.usage ? usage.swap.limit - usage.swap.usage : 0n) : await hostSwapFree();
    return { usage, nanoCores, swapAvailable };
  }

  async container(target: ContainerStatsTarget): Promise<ContainerSample> {
    const layout = await this.getLayout();
    const path = target.cgroupPath ?? (target.pid !== undefined ? await cgroupPathOfPid(layout, target.pid) : undefined);
    const [cg, disk] = await Promise.all([
      this.sampleCgroup(`c:${target.id}`, path),
      target.writableLayer ? diskUsage(target.writableLayer.dir) : Promise.resolve(undefined),
    ]);
    return { target, timestamp: nowNanos(), ...cg, disk };
  }

  async pod(target: PodStatsTarget): Promise<PodSample> {
    const [cg, network, containers] = await Promise.all([
      this.sampleCgroup(`p:${target.id}`, target.cgroupPath),
      target.network ? readPodNetwork(target.network) : Promise.resolve(undefined),
      Promise.all(target.containers.map((c) => this.container(c))),
    ]);
    return { target, timestamp: nowNanos(), ...cg, network, containers };
  }

  /** Forget CPU samples of objects that no longer exist. */
  retain(containerIds: Iterable<string>, podIds: Iterable<string>): void {
    this.cpu.retain(new Set([...[...containerIds].map((id) => `c:${id}`), ...[...podIds].map((id) => `p:${id}`)]));
  }
}

const u64 = (v: bigint | undefined): UInt64Value | null => (v === undefined ? null : { value: v.toString() });

function cpuMemSwap(s: { timestamp: string; usage?: CgroupUsage; nanoCores?: bigint; swapAvailable: bigint }) {
  const u = s.usage;
  const ts = s.timestamp;
  return {
    cpu: { timestamp: ts, usage_core_nano_seconds: u64(u?.cpuUsageNs ?? 0n), usage_nano_cores: u64(s.nanoCores ?? (u ? undefined : 0n)) },
    memory: {
      timestamp: ts,
      working_set_bytes: u64(u?.memory.workingSet ?? 0n),
      available_bytes: u64(u?.memory.limit !== undefined ? (u.memory.limit > u.memory.workingSet ? u.memory.limit - u.memory.workingSet : 0n) : 0n),
      usage_bytes: u64(u?.memory.usage ?? 0n),
      rss_bytes: u64(u?.memory.rss ?? 0n),
      page_faults: u64(u?.memory.pageFaults ?? 0n),
      major_page_faults: u64(u?.memory.majorPageFaults ?? 0n),
    },
    // Always present: zero when swap is off or not accounted.
    swap: { timestamp: ts, swap_available_bytes: u64(s.swapAvailable), swap_usage_bytes: u64(u?.swap.usage ?? 0n) },
  };
}

export function toContainerStats(s: ContainerSample): ContainerStats {
  const t = s.target;
  const { cpu, memory, swap } = cpuMemSwap(s);
  return {
    attributes: { id: t.id, metadata: t.metadata, labels: t.labels, annotations: t.annotations },
    cpu,
    memory,
    swap,
    writable_layer: t.writableLayer
      ? { timestamp: s.timestamp, fs_id: { mountpoint: t.writableLayer.mountpoint }, used_bytes: u64(s.disk?.bytes ?? 0n), inodes_used: u64(s.disk?.inodes ?? 0n) }
      : null,
  };
}

export function toPodSandboxStats(s: PodSample): PodSandboxStats {
  const t = s.target;
  const { cpu, memory } = cpuMemSwap(s);
  const ifaces = (s.network ?? []).map((i) => ({
    name: i.name,
    rx_bytes: u64(i.rxBytes),
    rx_errors: u64(i.rxErrors),
    tx_bytes: u64(i.txBytes),
    tx_errors: u64(i.txErrors),
  }));
  const def = ifaces.find((i) => i.name === DEFAULT_INTERFACE) ?? ifaces[0] ?? null;
  // `interfaces` lists every interface, the default one included (as the kubelet's summary does).
  return {
    attributes: { id: t.id, metadata: t.metadata, labels: t.labels, annotations: t.annotations },
    linux: {
      cpu,
      memory,
      network: s.network ? { timestamp: s.timestamp, default_interface: def, interfaces: ifaces } : null,
      process: { timestamp: s.timestamp, process_count: u64(s.usage?.processCount ?? 0n) },
      containers: s.containers.map(toContainerStats),
    },
  };
}
