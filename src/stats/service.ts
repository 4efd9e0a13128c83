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

export interface StatsRecords {
  pods(): PodRecord[] | Promise<PodRecord[]>;
  containers(): ContainerRecord[] | Promise<ContainerRecord[]>;
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
    const matches = containers.filter((c) => c.id === id || c.id.startsWith(id));
    const c = containers.find((x) => x.id === id) ?? (matches.length === 1 ? matches[0] : undefined);
    if (!c) throw notFound(matches.length > 1 ? `container ID prefix "${id}" is ambiguous` : `container "${id}" not found`, { container: id });
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
    const p = pods.find((x) => x.id === id) ?? pods.filter((x) => x.id.startsWith(id)).at(0);
    if (!p) throw notFound(`pod sandbox "${id}" not found`, { pod: id });
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
