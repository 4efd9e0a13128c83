// Stats and metrics rpcs: ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats,
// ListMetricDescriptors, ListPodSandboxMetrics. Translation only; sampling is in src/stats.
import type { DaemonContext } from '../daemon/context.js';
import { unary, type CriHandlers } from './server.js';
import { metricDescriptors } from '../stats/metrics.js';

export function statsService(ctx: DaemonContext): Partial<CriHandlers> {
  const stats = ctx.stats;
  return {
    runtime: {
      ContainerStats: unary(async (req) => ({ stats: await stats.containerStats(req.container_id) })),
      ListContainerStats: unary(async (req) => ({ stats: await stats.listContainerStats(req.filter) })),
      PodSandboxStats: unary(async (req) => ({ stats: await stats.podSandboxStats(req.pod_sandbox_id) })),
      ListPodSandboxStats: unary(async (req) => ({ stats: await stats.listPodSandboxStats(req.filter) })),
      ListMetricDescriptors: unary(async () => ({ descriptors: metricDescriptors() })),
      ListPodSandboxMetrics: unary(async () => ({ pod_metrics: await stats.listPodSandboxMetrics() })),
    },
  };
}
