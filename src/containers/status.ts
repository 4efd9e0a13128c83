// Container records as CRI objects (ContainerStatus, Container). Pure; used by the CRI service and by the
// pod manager's hook for PodSandboxStatus.containers_statuses.
import type { ContainerRecord, ContainerState } from '../store/records.js';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus.js';
import type { Container } from '../gen/runtime/v1/Container.js';
import type { Mount } from '../gen/runtime/v1/Mount.js';

export type CriContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';

const STATES: Record<ContainerState, CriContainerState> = {
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
  unknown: 'CONTAINER_UNKNOWN',
};

export function criState(c: ContainerRecord): CriContainerState {
  return STATES[c.state];
}

function mounts(c: ContainerRecord): Mount[] {
  return c.config.mounts.map((m) => ({
    container_path: m.container_path,
    host_path: m.host_path,
    readonly: m.readonly,
    selinux_relabel: m.selinux_relabel,
    propagation: m.propagation,
  }));
}

/** The image by the name it was found under; image_ref is its repo digest when known, else its ID. */
function imageSpec(c: ContainerRecord) {
  return { image: c.imageRef, annotations: c.config.image?.annotations ?? {}, user_specified_image: c.config.image?.image ?? c.imageRef, runtime_handler: c.handler };
}

export function containerStatus(c: ContainerRecord): ContainerStatus {
  return {
    id: c.id,
    metadata: c.config.metadata,
    state: criState(c),
    created_at: c.createdAt,
    started_at: c.startedAt ?? '0',
    finished_at: c.finishedAt ?? '0',
    exit_code: c.exitCode ?? 0,
    image: imageSpec(c),
    image_ref: c.imageRepoDigest ?? c.imageId,
    reason: c.reason ?? '',
    message: c.message ?? '',
    labels: c.config.labels,
    annotations: c.config.annotations,
    mounts: mounts(c),
    log_path: c.logPath,
    resources: c.config.linux?.resources ? { linux: c.config.linux.resources } : null,
  };
}

export function criContainer(c: ContainerRecord): Container {
  return {
    id: c.id,
    pod_sandbox_id: c.podId,
    metadata: c.config.metadata,
    image: imageSpec(c),
    image_ref: c.imageRepoDigest ?? c.imageId,
    state: criState(c),
    created_at: c.createdAt,
    labels: c.config.labels,
    annotations: c.config.annotations,
  };
}

/** Reason kubelet shows for an exited container. */
export function exitReason(code: number, oomKilled: boolean): string {
  if (oomKilled) return 'OOMKilled';
  return code === 0 ? 'Completed' : 'Error';
}

export interface ContainerFilter {
  id?: string;
  podId?: string;
  state?: CriContainerState;
  labels?: Record<string, string>;
}

export function matchesFilter(c: ContainerRecord, f: ContainerFilter): boolean {
  if (f.id && !c.id.startsWith(f.id)) return false;
  if (f.podId && !c.podId.startsWith(f.podId)) return false;
  if (f.state && criState(c) !== f.state) return false;
  return Object.entries(f.labels ?? {}).every(([k, v]) => c.config.labels[k] === v);
}
