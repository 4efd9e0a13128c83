// Everything a spec step may read. Facts that need the disk (users in the image's /etc/passwd, device
// numbers, host paths, a Localhost seccomp profile) are resolved beforehand by resolve.ts, so every step
// stays a pure function of (spec, input).
import type { ContainerConfig__Output } from '../../gen/runtime/v1/ContainerConfig.js';
import type { PodRecord } from '../../store/records.js';
import type { OciDevice, OciSeccomp } from './types.js';
import type { ResolvedCdi } from '../../cdi/registry.js';

/** The runtime-relevant part of an OCI image config (`config` in the image's config blob). */
export interface ImageRunConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  StopSignal?: string;
  Labels?: Record<string, string>;
  Volumes?: Record<string, unknown>;
}

/** The identity the process runs as, after name lookup in the image rootfs. */
export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Groups from the image's /etc/group that list the user, plus the request's supplemental groups. */
  additionalGids: number[];
  /** Home directory from /etc/passwd, for HOME when neither image nor request sets it. */
  home?: string;
}

/** A device from the request, with its node facts read from the host. */
export interface ResolvedDevice extends OciDevice {
  permissions: string;
}

/** The pod facts a container spec needs; a subset of PodRecord so tests can build it by hand. */
export type PodSpecFacts = Pick<PodRecord, 'id' | 'namespaces' | 'cgroupParent' | 'files' | 'uidMappings' | 'gidMappings'> & {
  config: Pick<PodRecord['config'], 'hostname' | 'linux'>;
};

export interface SpecInput {
  containerId: string;
  config: ContainerConfig__Output;
  image: ImageRunConfig;
  pod: PodSpecFacts;
  /** Absolute path of the mounted rootfs. */
  rootfs: string;
  user: ResolvedUser;
  devices: ResolvedDevice[];
  /**
   * The profile to apply: a loaded Localhost profile, or 'runtime-default' (built by the security step
   * from the container's capabilities); undefined = unconfined.
   */
  seccomp?: OciSeccomp | 'runtime-default';
  /** The daemon's own oom_score_adj when restrict_oom_score_adj is on: a container never gets less. */
  minOomScoreAdj?: number;
  apparmorEnabled: boolean;
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** CDI devices of the request, resolved with host device numbers filled in (CdiRegistry.resolveForContainer). */
  cdi?: ResolvedCdi;
}
