// The CDI spec file model (container-device-interface, spec versions 0.3.0 to 0.7.0), as read from
// /etc/cdi and /var/run/cdi. Field names are the spec's own (camelCase), so files map 1:1.

export interface CdiDeviceNode {
  path: string;
  /** Host path of the node when it differs from `path` (0.5.0+). */
  hostPath?: string;
  /** 'c', 'b', 'u' or 'p'; read from the host when absent. */
  type?: string;
  major?: number;
  minor?: number;
  fileMode?: number;
  /** cgroup device access, e.g. "rw"; "rwm" when absent. */
  permissions?: string;
  uid?: number;
  gid?: number;
}

export interface CdiMount {
  hostPath: string;
  containerPath: string;
  options?: string[];
  /** 0.4.0+ */
  type?: string;
}

export interface CdiHook {
  /** OCI hook stage: prestart, createRuntime, createContainer, startContainer, poststart, poststop */
  hookName: string;
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
  hooks?: CdiHook[];
  mounts?: CdiMount[];
  /** 0.7.0+ */
  additionalGids?: number[];
  /** 0.7.0+; accepted and validated as an object, not applied (no RDT on the runtimes here). */
  intelRdt?: Record<string, unknown>;
}

export interface CdiDevice {
  name: string;
  /** 0.6.0+ */
  annotations?: Record<string, string>;
  containerEdits: CdiContainerEdits;
}

export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  /** 0.6.0+ */
  annotations?: Record<string, string>;
  devices: CdiDevice[];
  containerEdits?: CdiContainerEdits;
}

export const CDI_VERSIONS = ['0.3.0', '0.4.0', '0.5.0', '0.6.0', '0.7.0'] as const;
export type CdiVersion = (typeof CDI_VERSIONS)[number];

/** A validated spec file with where it came from. */
export interface LoadedSpec {
  path: string;
  /** Index of the spec dir it was found in; a higher index overrides a lower one. */
  priority: number;
  spec: CdiSpec;
}

/** A problem in one spec file, with the 1-based line it points at when known. */
export interface SpecFileError {
  path: string;
  line?: number;
  /** The spec's kind when the file got far enough to tell it. */
  kind?: string;
  message: string;
}

export function describeSpecError(e: SpecFileError): string {
  return `${e.path}${e.line === undefined ? '' : `:${e.line}`}: ${e.message}`;
}
