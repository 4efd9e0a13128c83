// CRI metrics (KEP-2371): the kubelet re-exports these as Prometheus metrics, so names, help and labels
// follow cAdvisor's. Values come from the same samples as the stats rpcs (collector.ts), so
// ListPodSandboxMetrics and ListPodSandboxStats always agree. CRI values are uint64: CPU seconds are
// whole seconds (usage_core_nano_seconds in the stats rpcs keeps the precision).
import type { Metric } from '../gen/runtime/v1/Metric.js';
import type { MetricDescriptor } from '../gen/runtime/v1/MetricDescriptor.js';
import type { PodSandboxMetrics } from '../gen/runtime/v1/PodSandboxMetrics.js';
import type { ContainerSample, PodSample } from './collector.js';

/** cAdvisor's per-container labels. */
export const CONTAINER_LABELS = ['container', 'id', 'image', 'name', 'namespace', 'pod'];
const NETWORK_LABELS = [...CONTAINER_LABELS, 'interface'];

type Kind = 'COUNTER' | 'GAUGE';
interface Def {
  name: string;
  help: string;
  kind: Kind;
  labels: string[];
}

const def = (name: string, help: string, kind: Kind, labels = CONTAINER_LABELS): Def => ({ name, help, kind, labels });

export const METRIC_DEFS = {
  cpu: def('container_cpu_usage_seconds_total', 'Cumulative cpu time consumed in seconds.', 'COUNTER'),
  memUsage: def('container_memory_usage_bytes', 'Current memory usage in bytes, including all memory regardless of when it was accessed', 'GAUGE'),
  memWorkingSet: def('container_memory_working_set_bytes', 'Current working set in bytes.', 'GAUGE'),
  memRss: def('container_memory_rss', 'Size of RSS in bytes.', 'GAUGE'),
  memSwap: def('container_memory_swap', 'Container swap usage in bytes.', 'GAUGE'),
  memFailures: def('container_memory_failures_total', 'Cumulative count of memory allocation failures (page faults).', 'COUNTER', [...CONTAINER_LABELS, 'failure_type', 'scope']),
  processes: def('container_processes', 'Number of processes running inside the container.', 'GAUGE'),
  fsUsage: def('container_fs_usage_bytes', 'Number of bytes that are consumed by the container on this filesystem.', 'GAUGE', [...CONTAINER_LABELS, 'device']),
  rxBytes: def('container_network_receive_bytes_total', 'Cumulative count of bytes received', 'COUNTER', NETWORK_LABELS),
  rxErrors: def('container_network_receive_errors_total', 'Cumulative count of errors encountered while receiving', 'COUNTER', NETWORK_LABELS),
  txBytes: def('container_network_transmit_bytes_total', 'Cumulative count of bytes transmitted', 'COUNTER', NETWORK_LABELS),
  txErrors: def('container_network_transmit_errors_total', 'Cumulative count of errors encountered while transmitting', 'COUNTER', NETWORK_LABELS),
} as const;

export function metricDescriptors(): MetricDescriptor[] {
  return Object.values(METRIC_DEFS).map((d) => ({ name: d.name, help: d.help, label_keys: [...d.labels] }));
}

function metric(d: Def, timestamp: string, labels: string[], value: bigint): Metric {
  return { name: d.name, timestamp, metric_type: d.kind, label_values: labels, value: { value: value.toString() } };
}

/** Docker-style runtime name cAdvisor shows as `name`: k8s_<container>_<pod>_<namespace>_<uid>_<attempt>. */
function runtimeName(container: string, pod: PodSample['target'], attempt: number): string {
  const m = pod.metadata;
  return `k8s_${container}_${m.name ?? ''}_${m.namespace ?? ''}_${m.uid ?? ''}_${attempt}`;
}

function containerMetrics(c: ContainerSample, pod: PodSample['target']): Metric[] {
  const name = c.target.metadata.name ?? '';
  const labels = [name, c.target.cgroupPath ?? c.target.id, c.target.annotations['io.kubernetes.container.image'] ?? c.target.image ?? '', runtimeName(name, pod, c.target.metadata.attempt ?? 0), pod.metadata.namespace ?? '', pod.metadata.name ?? ''];
  const ts = c.timestamp;
  const u = c.usage;
  const D = METRIC_DEFS;
  const out = [
    metric(D.cpu, ts, labels, (u?.cpuUsageNs ?? 0n) / 1_000_000_000n),
    metric(D.memUsage, ts, labels, u?.memory.usage ?? 0n),
    metric(D.memWorkingSet, ts, labels, u?.memory.workingSet ?? 0n),
    metric(D.memRss, ts, labels, u?.memory.rss ?? 0n),
    metric(D.memSwap, ts, labels, u?.swap.usage ?? 0n),
    metric(D.memFailures, ts, [...labels, 'pgfault', 'container'], u?.memory.pageFaults ?? 0n),
    metric(D.memFailures, ts, [...labels, 'pgmajfault', 'container'], u?.memory.majorPageFaults ?? 0n),
    metric(D.processes, ts, labels, u?.processCount ?? 0n),
  ];
  if (c.target.writableLayer) out.push(metric(D.fsUsage, ts, [...labels, c.target.writableLayer.mountpoint], c.disk?.bytes ?? 0n));
  return out;
}

export function toPodSandboxMetrics(p: PodSample): PodSandboxMetrics {
  const t = p.target;
  // Pod-level series carry container="" like cAdvisor's pod cgroup; network is per pod (one netns).
  const labels = ['', t.cgroupPath ?? t.id, '', runtimeName('POD', t, t.metadata.attempt ?? 0), t.metadata.namespace ?? '', t.metadata.name ?? ''];
  const ts = p.timestamp;
  const D = METRIC_DEFS;
  const metrics: Metric[] = [];
  if (p.usage) {
    metrics.push(
      metric(D.cpu, ts, labels, p.usage.cpuUsageNs / 1_000_000_000n),
      metric(D.memUsage, ts, labels, p.usage.memory.usage),
      metric(D.memWorkingSet, ts, labels, p.usage.memory.workingSet),
      metric(D.memSwap, ts, labels, p.usage.swap.usage),
      metric(D.processes, ts, labels, p.usage.processCount),
    );
  }
  for (const i of p.network ?? []) {
    const l = [...labels, i.name];
    metrics.push(metric(D.rxBytes, ts, l, i.rxBytes), metric(D.rxErrors, ts, l, i.rxErrors), metric(D.txBytes, ts, l, i.txBytes), metric(D.txErrors, ts, l, i.txErrors));
  }
  return {
    pod_sandbox_id: t.id,
    metrics,
    container_metrics: p.containers.map((c) => ({ container_id: c.target.id, metrics: containerMetrics(c, t) })),
  };
}
