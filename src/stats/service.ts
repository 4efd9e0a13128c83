// The stats subsystem (`ctx.stats`): samples pods and containers for the stats and metrics rpcs.
// Records come from the pods and containers modules through StatsRecords.
import type { ContainerRecord, PodRecord } from '../store/records.js';
import { StatsCollector, toContainerStats, toPodSandboxStats } from './collector.js';
import { toPodSandboxMetrics } from './metrics.js';
import { containerTarget, filterContainers, filterPods, podTarget, type ContainerFilter, type TargetPaths } from './targets.js';
import type { ContainerStats } from '../gen/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from '../gen/runtime/v1/PodSandboxStats.js';
import type { PodSandboxMetrics } from '../gen/runtime/v1/PodSandboxMetrics.js';
import { notFound, invalidArgument } from '../errors.js';
import { findByIdOrPrefix } from '../util/id-prefix.js';

export interface StatsRecords {
  pods(): PodRecord[] | Promise<PodRecord[]>;
  containers(): ContainerRecord[] | Promise<ContainerRecord[]>;
}

/** An exact ID or an unambiguous prefix (crictl passes truncated IDs), with the codes every rpc uses. */
function byIdOrPrefix<T extends { id: string }>(all: T[], id: string, what: string, key: string): T {
  const found = findByIdOrPrefix(new Map(all.map((x) => [x.id, x])), id, what, key);
  if (!found) throw notFound(`${what} "${id}" not found`, { [key]: id });
  return found;
}

export class StatsService {
  private records?: StatsRecords;

  constructor(
    private readonly paths: TargetPaths,
    private readonly collector = new StatsCollector(),
  ) {}

  /** Set by the daemon once the pods and containers modules exist. */
  setRecords(records: StatsRecords): void {
    this.records = records;
  }

  private async all(): Promise<{ pods: PodRecord[]; containers: ContainerRecord[] }> {
    if (!this.records) return { pods: [], containers: [] };
    const [pods, containers] = await Promise.all([this.records.pods(), this.records.containers()]);
    this.collector.retain(
      containers.map((c) => c.id),
      pods.map((p) => p.id),
    );
    return { pods, containers };
  }

  async containerStats(id: string): Promise<ContainerStats> {
    if (id === '') throw invalidArgument('container_id is required');
    const { containers } = await this.all();
    const c = byIdOrPrefix(containers, id, 'container', 'container');
    return toContainerStats(await this.collector.container(containerTarget(c, this.paths)));
  }

  async listContainerStats(filter: ContainerFilter | null | undefined): Promise<ContainerStats[]> {
    const { containers } = await this.all();
    const samples = await Promise.all(filterContainers(containers, filter).map((c) => this.collector.container(containerTarget(c, this.paths))));
    return samples.map(toContainerStats);
  }

  private async podTargets(filter: { id?: string; label_selector?: Record<string, string> } | null | undefined) {
    const { pods, containers } = await this.all();
    return filterPods(pods, filter).map((p) => podTarget(p, containers, this.paths));
  }

  async podSandboxStats(id: string): Promise<PodSandboxStats> {
    if (id === '') throw invalidArgument('pod_sandbox_id is required');
    const { pods, containers } = await this.all();
    const p = byIdOrPrefix(pods, id, 'pod sandbox', 'pod');
    return toPodSandboxStats(await this.collector.pod(podTarget(p, containers, this.paths)));
  }

  async listPodSandboxStats(filter: { id?: string; label_selector?: Record<string, string> } | null | undefined): Promise<PodSandboxStats[]> {
    const targets = await this.podTargets(filter);
    return (await Promise.all(targets.map((t) => this.collector.pod(t)))).map(toPodSandboxStats);
  }

  async listPodSandboxMetrics(): Promise<PodSandboxMetrics[]> {
    const targets = await this.podTargets(undefined);
    return (await Promise.all(targets.map((t) => this.collector.pod(t)))).map(toPodSandboxMetrics);
  }
}
