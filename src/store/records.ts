// The persisted shape of pods and containers: what restart recovery reads back. The CRI request that
// created an object is kept verbatim (as decoded by grpc-js), so status calls can echo it exactly.
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig.js';
import type { CniNetworkList } from '../net/cni.js';

export type PodState = 'ready' | 'notready';

/** Where a pod's namespaces live. Absent = shared with the host (hostNetwork, hostIPC, …). */
export interface PodNamespaces {
  /** bind-mounted network namespace file, e.g. <state>/netns/<id> */
  net?: string;
  ipc?: string;
  uts?: string;
  /** /proc/<pid>/ns/pid of the pod's init (catatonit -P) when the PID namespace is POD-scoped */
  pid?: string;
  /** pid of that init process, and its start time (to tell it from a reused pid after a restart) */
  pidInitPid?: number;
  pidInitStartTime?: string;
  /** user namespace pinned for a userns pod, with its mappings */
  user?: string;
}

export interface IdMapping {
  containerId: number;
  hostId: number;
  size: number;
}

export interface PodRecord {
  id: string;
  config: PodSandboxConfig__Output;
  /** resolved runtime handler name (never '') */
  handler: string;
  state: PodState;
  /** Unix time in nanoseconds, as a decimal string (int64 on the wire). */
  createdAt: string;
  namespaces: PodNamespaces;
  /** cgroup path of the pod (cgroupfs: a path under each controller; systemd: a slice name) */
  cgroupParent: string;
  /** Files prepared for the pod's containers, bind-mounted into each. */
  files: { hostname?: string; hosts?: string; resolvConf?: string; shm?: string };
  /** IPs from CNI, primary first. */
  ips: string[];
  /** The raw CNI result, persisted so status after restart is unchanged. */
  cniResult?: unknown;
  /**
   * The CNI network list ADD was (or is being) run with, kept so DEL runs the same plugins even after the
   * conf dir changed. `attached` is set *before* ADD starts: a crash mid-ADD still leads to a DEL.
   */
  cni?: { network: CniNetworkList; attached: boolean };
  /** cgroup directories skiff created for this pod (removed with it) */
  cgroupDirs?: string[];
  /** the pod's runtime dir (<state>/pods/<id>): namespace pins, shm, prepared files */
  dir?: string;
  /** true while RunPodSandbox is still building the pod; a record found like this at start-up is undone */
  creating?: boolean;
  uidMappings?: IdMapping[];
  gidMappings?: IdMapping[];
}

export type ContainerState = 'created' | 'running' | 'exited' | 'unknown';

export interface ContainerRecord {
  id: string;
  podId: string;
  config: ContainerConfig__Output;
  handler: string;
  /** image ID (sha256:…) the rootfs was made from, and the reference the user asked for */
  imageId: string;
  imageRef: string;
  state: ContainerState;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode?: number;
  reason?: string;
  message?: string;
  pid?: number;
  /** absolute path of the CRI log file (pod log_directory + container log_path) */
  logPath: string;
  /** bundle dir holding config.json and conmon's files */
  bundle: string;
  /** name@sha256:… of the image, when it was pulled by a registry (kubelet shows it as the image ID) */
  imageRepoDigest?: string;
  /** the image's StopSignal (e.g. "SIGQUIT"), sent first by StopContainer; default SIGTERM */
  stopSignal?: string;
  /** true while CreateContainer is still building it; a record found like this at start-up is undone */
  creating?: boolean;
}
