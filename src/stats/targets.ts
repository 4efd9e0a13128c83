// Which cgroups, netns and dirs to read for a pod or container, from their stored records.
import type { ContainerRecord, PodRecord } from '../store/records.js';
import type { ContainerStatsTarget, PodStatsTarget } from './collector.js';

export interface TargetPaths {
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** The container's writable layer (overlay upper dir) and the mount point of its filesystem. */
  writableLayer?(containerId: string): { dir: string; mountpoint: string } | undefined;
}

export function containerTarget(c: ContainerRecord, paths: TargetPaths): ContainerStatsTarget {
  return {
    id: c.id,
    podId: c.podId,
    metadata: c.config.metadata ?? { name: '', attempt: 0 },
    labels: c.config.labels,
    annotations: c.config.annotations,
    image: c.imageRef,
    // Only a running container has a live cgroup to read; its pid leads to it whatever the driver.
    pid: c.state === 'running' ? c.pid : undefined,
    writableLayer: paths.writableLayer?.(c.id),
  };
}

/** The pod with its running containers. Host-network pods have no network counters of their own. */
export function podTarget(p: PodRecord, containers: ContainerRecord[], paths: TargetPaths): PodStatsTarget {
  const running = containers.filter((c) => c.podId === p.id && c.state === 'running');
  const netPid = running.find((c) => c.pid !== undefined)?.pid ?? p.namespaces.pidInitPid;
  return {
    id: p.id,
    metadata: p.config.metadata ?? { name: '', uid: '', namespace: '', attempt: 0 },
    labels: p.config.labels,
    annotations: p.config.annotations,
    cgroupPath: paths.cgroupDriver === 'cgroupfs' && p.cgroupParent !== '' ? p.cgroupParent : undefined,
    network: p.namespaces.net ? { pid: netPid, netnsPath: p.namespaces.net } : undefined,
    containers: running.map((c) => containerTarget(c, paths)),
  };
}

function matchesLabels(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

export interface ContainerFilter {
  id?: string;
  pod_sandbox_id?: string;
  label_selector?: Record<string, string>;
}

/** Running containers matching a ListContainerStats filter (exact ID or a unique-enough prefix). */
export function filterContainers(all: ContainerRecord[], f: ContainerFilter | null | undefined): ContainerRecord[] {
  return all.filter(
    (c) =>
      c.state === 'running' &&
      (!f?.id || c.id.startsWith(f.id)) &&
      (!f?.pod_sandbox_id || c.podId.startsWith(f.pod_sandbox_id)) &&
      matchesLabels(c.config.labels, f?.label_selector),
  );
}

export function filterPods(all: PodRecord[], f: { id?: string; label_selector?: Record<string, string> } | null | undefined): PodRecord[] {
  return all.filter((p) => p.state === 'ready' && (!f?.id || p.id.startsWith(f.id)) && matchesLabels(p.config.labels, f?.label_selector));
}
