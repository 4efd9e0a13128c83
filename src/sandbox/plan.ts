// Turns a PodSandboxConfig into a validated plan (which namespaces, sysctls, cgroup, hostname, CNI
// arguments) before anything is created, so bad input fails with INVALID_ARGUMENT and leaves no trace.
// Pure: unit-tested without a daemon.
import { hostname as hostHostname } from 'node:os';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig.js';
import type { NamespaceMode__Output } from '../gen/runtime/v1/NamespaceMode.js';
import type { LinuxSandboxSecurityContext__Output } from '../gen/runtime/v1/LinuxSandboxSecurityContext.js';
import type { CgroupDriver } from '../config/config.js';
import type { CniBandwidth, CniPortMapping } from '../net/cni.js';
import type { IdMapping } from '../store/records.js';
import { checkSysctls, type CheckedSysctl } from './sysctls.js';
import { checkCgroupfsPath, expandSlice, podCgroupLimits, type CgroupLimits } from './cgroups.js';
import { invalidArgument } from '../errors.js';
import { checkIdMappings } from '../util/id-mappings.js';

export interface PodPlan {
  hostNetwork: boolean;
  hostIpc: boolean;
  hostPid: boolean;
  /** a pod-wide PID namespace held by catatonit */
  podPid: boolean;
  hostname: string;
  sysctls: CheckedSysctl[];
  cgroupParent: string;
  /** caps for the pod cgroup when skiff creates it (resources + overhead) */
  limits: CgroupLimits;
  portMappings: CniPortMapping[];
  bandwidth?: CniBandwidth;
  cniArgs: Record<string, string>;
  uidMappings?: IdMapping[];
  gidMappings?: IdMapping[];
}

/** grpc-js hands enums as names (enums: String); numbers are accepted too. */
function mode(m: NamespaceMode__Output | undefined): 'POD' | 'CONTAINER' | 'NODE' | 'TARGET' {
  const names = ['POD', 'CONTAINER', 'NODE', 'TARGET'] as const;
  if (typeof m === 'number') return names[m] ?? 'POD';
  return m ?? 'POD';
}

/** Kubernetes resource quantities ("10M", "1Gi", "500k") in units (here bits per second). */
export function parseQuantity(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$/.exec(text.trim());
  if (!m) throw invalidArgument(`"${text}" is not a resource quantity`);
  const mult: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };
  return Math.round(Number(m[1]) * (m[2] ? mult[m[2]] : 1));
}

/** kubelet passes pod bandwidth as annotations; the bandwidth plugin wants bits/s and a burst. */
function bandwidthOf(annotations: Record<string, string>): CniBandwidth | undefined {
  const ingress = annotations['kubernetes.io/ingress-bandwidth'];
  const egress = annotations['kubernetes.io/egress-bandwidth'];
  if (ingress === undefined && egress === undefined) return undefined;
  // Same burst as containerd gives: effectively unlimited, the rate is what shapes.
  const burst = 2 ** 31 - 1;
  const bw: CniBandwidth = {};
  if (ingress !== undefined) Object.assign(bw, { ingressRate: parseQuantity(ingress), ingressBurst: burst });
  if (egress !== undefined) Object.assign(bw, { egressRate: parseQuantity(egress), egressBurst: burst });
  return bw;
}

function portMappingsOf(config: PodSandboxConfig__Output): CniPortMapping[] {
  return config.port_mappings
    .filter((p) => p.host_port > 0)
    .map((p) => {
      if (p.host_port > 65535 || p.container_port <= 0 || p.container_port > 65535)
        throw invalidArgument(`port mapping ${p.host_port}:${p.container_port}: ports must be 1-65535`);
      const protocol = String(p.protocol).toLowerCase();
      if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp') throw invalidArgument(`port mapping: unknown protocol ${String(p.protocol)}`);
      return { hostPort: p.host_port, containerPort: p.container_port, protocol, ...(p.host_ip ? { hostIP: p.host_ip } : {}) };
    });
}

function idMappings(list: { host_id: number; container_id: number; length: number }[], what: string): IdMapping[] {
  return checkIdMappings(list, `userns_options ${what} mappings (POD mode needs them)`).map((m) => ({ containerId: m.container_id, hostId: m.host_id, size: m.length }));
}

/**
 * The sandbox security context. Without a pause container there is no sandbox process to confine, but
 * what the pod asks is still checked here (and kept in the record for its containers), so nonsense fails
 * at RunPodSandbox and not later at CreateContainer.
 */
function checkSecurityContext(sc: LinuxSandboxSecurityContext__Output | null | undefined): void {
  if (!sc) return;
  if (sc.run_as_group && !sc.run_as_user) throw invalidArgument('security_context: run_as_group is set without run_as_user');
  for (const [what, v] of [['run_as_user', sc.run_as_user], ['run_as_group', sc.run_as_group]] as const) {
    if (v && !/^\d+$/.test(v.value)) throw invalidArgument(`security_context: ${what} ${v.value} must be a non-negative id`);
  }
  for (const [what, prof] of [['seccomp', sc.seccomp], ['apparmor', sc.apparmor]] as const) {
    if (prof && String(prof.profile_type) === 'Localhost' && prof.localhost_ref === '')
      throw invalidArgument(`security_context: ${what} profile type Localhost needs localhost_ref`);
  }
  const path = sc.seccomp_profile_path;
  if (path !== '' && !['unconfined', 'runtime/default', 'docker/default'].includes(path) && !(path.startsWith('localhost/') && path.length > 'localhost/'.length))
    throw invalidArgument(`security_context: seccomp_profile_path "${path}" must be unconfined, runtime/default or localhost/<path>`);
}

export function planPod(config: PodSandboxConfig__Output, opts: { cgroupDriver: CgroupDriver; defaultCgroupParent: string; podId: string }): PodPlan {
  const meta = config.metadata;
  if (!meta || meta.name === '') throw invalidArgument('pod sandbox metadata.name is required');
  checkSecurityContext(config.linux?.security_context);
  const nsOpts = config.linux?.security_context?.namespace_options ?? null;
  const net = mode(nsOpts?.network);
  const ipc = mode(nsOpts?.ipc);
  const pid = mode(nsOpts?.pid);
  if (net === 'TARGET' || ipc === 'TARGET' || pid === 'TARGET') throw invalidArgument('namespace mode TARGET is for containers, not pods');
  const hostNetwork = net === 'NODE';
  const hostIpc = ipc === 'NODE';
  const hostPid = pid === 'NODE';

  // A pod on the host network shares the host's UTS namespace too (as in Kubernetes): its hostname is the node's.
  const hostname = hostNetwork ? hostHostname() : config.hostname || hostHostname();
  if (Buffer.byteLength(hostname) > 64 || /[\0\n]/.test(hostname)) throw invalidArgument(`hostname "${hostname}" is longer than 64 bytes or has control characters`);

  const sysctls = checkSysctls(config.linux?.sysctls ?? {}, { net: !hostNetwork, ipc: !hostIpc });

  let cgroupParent = config.linux?.cgroup_parent ?? '';
  if (opts.cgroupDriver === 'cgroupfs') {
    cgroupParent = cgroupParent === '' ? `${checkCgroupfsPath(opts.defaultCgroupParent)}/pod-${opts.podId}` : checkCgroupfsPath(cgroupParent);
  } else if (cgroupParent === '') {
    // A slice of the pod's own below the configured one (a cgroupfs-style default means skiff.slice).
    const base = opts.defaultCgroupParent.endsWith('.slice') && opts.defaultCgroupParent !== '-.slice' ? opts.defaultCgroupParent.slice(0, -'.slice'.length) : 'skiff';
    cgroupParent = `${base}-pod${opts.podId}.slice`;
    expandSlice(cgroupParent);
  } else {
    try {
      expandSlice(cgroupParent);
    } catch {
      throw invalidArgument(`cgroup_parent "${cgroupParent}" must be a systemd slice name (the systemd cgroup driver is configured)`);
    }
  }

  let uidMappings: IdMapping[] | undefined;
  let gidMappings: IdMapping[] | undefined;
  const userns = nsOpts?.userns_options;
  if (userns && mode(userns.mode) === 'POD') {
    uidMappings = idMappings(userns.uids, 'uid');
    gidMappings = idMappings(userns.gids, 'gid');
  } else if (userns && mode(userns.mode) !== 'NODE') {
    throw invalidArgument('userns_options.mode must be NODE or POD');
  }

  return {
    hostNetwork,
    hostIpc,
    hostPid,
    podPid: pid === 'POD',
    hostname,
    sysctls,
    cgroupParent,
    limits: podCgroupLimits(config.linux?.resources, config.linux?.overhead),
    portMappings: hostNetwork ? [] : portMappingsOf(config),
    bandwidth: hostNetwork ? undefined : bandwidthOf(config.annotations),
    cniArgs: {
      K8S_POD_NAMESPACE: meta.namespace,
      K8S_POD_NAME: meta.name,
      K8S_POD_INFRA_CONTAINER_ID: opts.podId,
      K8S_POD_UID: meta.uid,
    },
    uidMappings,
    gidMappings,
  };
}
