// Version, Status, RuntimeConfig, UpdateRuntimeConfig: what the runtime is and whether it can work.
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary } from './server.js';
import { RUNTIME_NAME, SKIFF_VERSION, CRI_API_VERSION } from '../version.js';
import { networkReadiness } from '../net/cni.js';
import type { VersionResponse } from '../gen/runtime/v1/VersionResponse.js';
import type { StatusRequest__Output } from '../gen/runtime/v1/StatusRequest.js';
import type { StatusResponse } from '../gen/runtime/v1/StatusResponse.js';
import type { RuntimeCondition } from '../gen/runtime/v1/RuntimeCondition.js';
import type { RuntimeConfigResponse } from '../gen/runtime/v1/RuntimeConfigResponse.js';
import type { UpdateRuntimeConfigRequest__Output } from '../gen/runtime/v1/UpdateRuntimeConfigRequest.js';

async function runtimeCondition(ctx: DaemonContext): Promise<RuntimeCondition> {
  const { ready, reason, message } = await ctx.handlers.readiness();
  return { type: 'RuntimeReady', status: ready, reason, message };
}

async function networkCondition(ctx: DaemonContext): Promise<RuntimeCondition> {
  const { ready, message } = await networkReadiness(ctx.config.cni.confDir, ctx.config.cni.binDir);
  if (!ready) return { type: 'NetworkReady', status: false, reason: 'NetworkPluginNotReady', message };
  return { type: 'NetworkReady', status: true, reason: '', message: '' };
}

/** `verbose` info: the effective config, as CRI-O and containerd return theirs. */
function statusInfo(ctx: DaemonContext): Record<string, string> {
  const { config } = ctx;
  return {
    config: JSON.stringify({
      root: config.root,
      state: config.state,
      socket: config.socket,
      configFile: config.configFile,
      cgroupDriver: config.cgroupDriver,
      defaultRuntime: config.defaultRuntime,
      runtimes: config.runtimes,
      cni: config.cni,
      registry: { configPath: config.registry.configPath, mirrors: config.registry.mirrors, insecure: config.registry.insecure },
      cdi: config.cdi,
      streaming: { address: config.streaming.address, port: config.streaming.port },
      podCidrs: ctx.network.cidrs,
    }),
  };
}

export function runtimeInfoService(ctx: DaemonContext): Partial<CriHandlers> {
  return {
    runtime: {
      Version: unary(async (): Promise<VersionResponse> => ({
        version: '0.1.0', // the kubelet-side CRI "version" field: fixed by the API, not ours
        runtime_name: RUNTIME_NAME,
        runtime_version: SKIFF_VERSION,
        runtime_api_version: CRI_API_VERSION,
      })),
      Status: unary(async (req: StatusRequest__Output): Promise<StatusResponse> => {
        const conditions = [await runtimeCondition(ctx), await networkCondition(ctx)];
        return { status: { conditions }, info: req.verbose ? statusInfo(ctx) : {} };
      }),
      RuntimeConfig: unary(async (): Promise<RuntimeConfigResponse> => ({
        linux: { cgroup_driver: ctx.config.cgroupDriver === 'systemd' ? 'SYSTEMD' : 'CGROUPFS' },
      })),
      UpdateRuntimeConfig: unary(async (req: UpdateRuntimeConfigRequest__Output) => {
        await ctx.network.setPodCidr(req.runtime_config?.network_config?.pod_cidr ?? '');
        return {};
      }),
    },
  };
}
