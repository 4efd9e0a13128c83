// RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox: validate and
// translate only; the mechanics live in src/sandbox (ctx.pods).
import { isAbsolute } from 'node:path';
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary, cancelSignal } from './server.js';
import type { PodRecord } from '../store/records.js';
import { invalidArgument } from '../errors.js';
import { nowNanos } from '../events/bus.js';
import type { RunPodSandboxRequest__Output } from '../gen/runtime/v1/RunPodSandboxRequest.js';
import type { RunPodSandboxResponse } from '../gen/runtime/v1/RunPodSandboxResponse.js';
import type { StopPodSandboxRequest__Output } from '../gen/runtime/v1/StopPodSandboxRequest.js';
import type { RemovePodSandboxRequest__Output } from '../gen/runtime/v1/RemovePodSandboxRequest.js';
import type { PodSandboxStatusRequest__Output } from '../gen/runtime/v1/PodSandboxStatusRequest.js';
import type { PodSandboxStatusResponse } from '../gen/runtime/v1/PodSandboxStatusResponse.js';
import type { PodSandboxStatus } from '../gen/runtime/v1/PodSandboxStatus.js';
import type { ListPodSandboxRequest__Output } from '../gen/runtime/v1/ListPodSandboxRequest.js';
import type { ListPodSandboxResponse } from '../gen/runtime/v1/ListPodSandboxResponse.js';
import type { PodSandbox } from '../gen/runtime/v1/PodSandbox.js';
import type { NamespaceOption } from '../gen/runtime/v1/NamespaceOption.js';

function criState(pod: PodRecord): 'SANDBOX_READY' | 'SANDBOX_NOTREADY' {
  return pod.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY';
}

/** The namespace options exactly as asked (defaults filled by the decoder), stable across calls. */
function namespaceOptions(pod: PodRecord): NamespaceOption {
  const asked = pod.config.linux?.security_context?.namespace_options;
  return asked ?? { network: 'POD', pid: 'POD', ipc: 'POD', target_id: '', userns_options: null };
}

export function podSandboxStatus(pod: PodRecord): PodSandboxStatus {
  const [ip = '', ...more] = pod.ips;
  return {
    id: pod.id,
    metadata: pod.config.metadata,
    state: criState(pod),
    created_at: pod.createdAt,
    network: { ip, additional_ips: more.map((a) => ({ ip: a })) },
    linux: { namespaces: { options: namespaceOptions(pod) } },
    labels: pod.config.labels,
    annotations: pod.config.annotations,
    runtime_handler: pod.handler,
  };
}

function podSandbox(pod: PodRecord): PodSandbox {
  return {
    id: pod.id,
    metadata: pod.config.metadata,
    state: criState(pod),
    created_at: pod.createdAt,
    labels: pod.config.labels,
    annotations: pod.config.annotations,
    runtime_handler: pod.handler,
  };
}

function requireId(id: string): string {
  if (id === '') throw invalidArgument('pod_sandbox_id is required');
  return id;
}

export function podService(ctx: DaemonContext): Partial<CriHandlers> {
  return {
    runtime: {
      RunPodSandbox: unary(async (req: RunPodSandboxRequest__Output, call): Promise<RunPodSandboxResponse> => {
        if (!req.config) throw invalidArgument('config is required');
        // as CRI-O: a relative log directory would be resolved against the daemon's cwd
        const logDir = req.config.log_directory;
        if (logDir !== '' && !isAbsolute(logDir)) throw invalidArgument(`log_directory must be an absolute path, got "${logDir.slice(0, 300)}"`, { pod: req.config.metadata?.name });
        const pod = await ctx.pods.run({ config: req.config, handler: req.runtime_handler, signal: cancelSignal(call) });
        return { pod_sandbox_id: pod.id };
      }),
      StopPodSandbox: unary(async (req: StopPodSandboxRequest__Output) => {
        await ctx.pods.stop(requireId(req.pod_sandbox_id));
        return {};
      }),
      RemovePodSandbox: unary(async (req: RemovePodSandboxRequest__Output) => {
        await ctx.pods.remove(requireId(req.pod_sandbox_id));
        return {};
      }),
      PodSandboxStatus: unary(async (req: PodSandboxStatusRequest__Output): Promise<PodSandboxStatusResponse> => {
        const pod = await ctx.pods.refresh(ctx.pods.get(requireId(req.pod_sandbox_id)));
        const containers = await ctx.pods.containerStatuses(pod);
        const info: Record<string, string> = {};
        if (req.verbose) {
          info.info = JSON.stringify({
            pid: pod.namespaces.pidInitPid ?? 0,
            namespaces: pod.namespaces,
            cgroupParent: pod.cgroupParent,
            files: pod.files,
            cniResult: pod.cniResult ?? null,
            network: pod.cni?.network.name ?? null,
            // verbose status is where a person (or crictl inspectp) asks "is the network still right?"
            networkCheck: await ctx.pods.checkNetwork(pod.id),
            runtimeHandler: pod.handler,
            config: pod.config,
          });
        }
        // 1.29: containers_statuses and timestamp always travel together.
        return { status: podSandboxStatus(pod), info, containers_statuses: containers, timestamp: nowNanos() };
      }),
      ListPodSandbox: unary(async (req: ListPodSandboxRequest__Output): Promise<ListPodSandboxResponse> => {
        const f = req.filter;
        const items = (await Promise.all(ctx.pods.list().map((p) => ctx.pods.refresh(p))))
          .filter((p) => !f?.id || p.id.startsWith(f.id))
          .filter((p) => !f?.state || criState(p) === f.state.state)
          .filter((p) => Object.entries(f?.label_selector ?? {}).every(([k, v]) => p.config.labels[k] === v))
          .sort((a, b) => (BigInt(a.createdAt) < BigInt(b.createdAt) ? -1 : 1));
        return { items: items.map(podSandbox) };
      }),
    },
  };
}
