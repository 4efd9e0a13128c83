// Linux steps: the pod's namespaces, devices, cgroup placement and resources.
import type { OciNamespace, OciResources, OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import type { LinuxContainerResources__Output } from '../../gen/runtime/v1/LinuxContainerResources.js';
import { invalidArgument } from '../../errors.js';

/**
 * Joins the pod's network, IPC and UTS namespaces (absent path = the host's: no namespace entry); PID
 * per namespace_options.pid: POD joins the pod's, NODE uses the host's, CONTAINER (default) a new one.
 */
export function withNamespaces(spec: OciSpec, input: SpecInput): OciSpec {
  const ns = input.pod.namespaces;
  const opt = input.config.linux?.security_context?.namespace_options;
  const list: OciNamespace[] = [{ type: 'mount' }];
  if (ns.net) list.push({ type: 'network', path: ns.net });
  if (ns.ipc) list.push({ type: 'ipc', path: ns.ipc });
  if (ns.uts) list.push({ type: 'uts', path: ns.uts });
  const pid = opt?.pid ?? 'CONTAINER';
  if (pid === 'POD') {
    if (!ns.pid) throw invalidArgument('namespace_options.pid is POD but the pod has no shared PID namespace', { pod: input.pod.id });
    list.push({ type: 'pid', path: ns.pid });
  } else if (pid !== 'NODE') list.push({ type: 'pid' });
  if (ns.user) list.push({ type: 'user', path: ns.user });
  // A private cgroup namespace so /sys/fs/cgroup shows the container's own cgroup.
  list.push({ type: 'cgroup' });
  const linux = { ...spec.linux, namespaces: list };
  if (ns.user && input.pod.uidMappings && input.pod.gidMappings) {
    const map = (m: { containerId: number; hostId: number; size: number }) => ({ containerID: m.containerId, hostID: m.hostId, size: m.size });
    linux.uidMappings = input.pod.uidMappings.map(map);
    linux.gidMappings = input.pod.gidMappings.map(map);
  }
  // Without a UTS namespace of its own the pod uses the host's name: runc refuses to set one then.
  const hostname = ns.uts ? spec.hostname : undefined;
  return { ...spec, hostname, linux };
}

/** The pod's hostname, when the container gets its own UTS view of it. */
export function withHostname(spec: OciSpec, input: SpecInput): OciSpec {
  return input.pod.config.hostname ? { ...spec, hostname: input.pod.config.hostname } : spec;
}

/** Device nodes from the request plus the cgroup rules allowing them (everything else denied). */
export function withDevices(spec: OciSpec, input: SpecInput): OciSpec {
  const privileged = input.config.linux?.security_context?.privileged ?? false;
  const rules = privileged
    ? [{ allow: true, access: 'rwm' }]
    : [
        { allow: false, access: 'rwm' },
        ...input.devices.map((d) => ({ allow: true, type: d.type === 'b' ? ('b' as const) : ('c' as const), major: d.major, minor: d.minor, access: d.permissions || 'rwm' })),
      ];
  const devices = input.devices.map(({ permissions: _p, ...node }) => node);
  return { ...spec, linux: { ...spec.linux, devices, resources: { ...spec.linux.resources, devices: rules } } };
}

/** cgroupfs: a path under the pod's parent; systemd: "slice:prefix:name" as runc expects. */
export function withCgroupsPath(spec: OciSpec, input: SpecInput): OciSpec {
  const parent = input.pod.cgroupParent;
  const cgroupsPath = input.cgroupDriver === 'systemd' ? `${parent}:skiff:${input.containerId}` : `${parent.replace(/\/+$/, '')}/${input.containerId}`;
  return { ...spec, linux: { ...spec.linux, cgroupsPath } };
}

const int = (s: string | undefined): number => (s ? Number(s) : 0);

/** The CRI resources as OCI resources (only what is set). Exported for UpdateContainerResources. */
export function ociResources(r: LinuxContainerResources__Output | null | undefined): OciResources {
  if (!r) return {};
  const out: OciResources = {};
  const cpu: NonNullable<OciResources['cpu']> = {};
  if (int(r.cpu_shares) > 0) cpu.shares = int(r.cpu_shares);
  if (int(r.cpu_quota) !== 0) cpu.quota = int(r.cpu_quota);
  if (int(r.cpu_period) > 0) cpu.period = int(r.cpu_period);
  if (r.cpuset_cpus) cpu.cpus = r.cpuset_cpus;
  if (r.cpuset_mems) cpu.mems = r.cpuset_mems;
  if (Object.keys(cpu).length > 0) out.cpu = cpu;
  if (int(r.memory_limit_in_bytes) > 0) {
    out.memory = { limit: int(r.memory_limit_in_bytes) };
    if (int(r.memory_swap_limit_in_bytes) > 0) out.memory.swap = int(r.memory_swap_limit_in_bytes);
  }
  if (r.hugepage_limits.length > 0) out.hugepageLimits = r.hugepage_limits.map((h) => ({ pageSize: h.page_size, limit: int(h.limit) }));
  if (Object.keys(r.unified).length > 0) out.unified = { ...r.unified };
  return out;
}

/** Clamps oom_score_adj to [floor, 1000]: without CAP_SYS_RESOURCE runc cannot go below our own. */
export function clampOomScoreAdj(requested: number, floor: number | undefined): number {
  const v = Math.min(1000, Math.max(-1000, requested));
  return floor === undefined ? v : Math.max(floor, v);
}

export function withResources(spec: OciSpec, input: SpecInput): OciSpec {
  const r = input.config.linux?.resources;
  const oom = clampOomScoreAdj(int(r?.oom_score_adj), input.minOomScoreAdj);
  return {
    ...spec,
    process: { ...spec.process, oomScoreAdj: oom },
    linux: { ...spec.linux, resources: { ...spec.linux.resources, ...ociResources(r) } },
  };
}
