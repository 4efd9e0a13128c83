// What `inspect` (ContainerStatus verbose info) says about the 1.29 additions, in plain terms: the CDI
// devices the container asked for and the devices they put in, the user namespace it runs in, and the
// mounts that carry uid/gid mappings. Read from the stored config and the spec the runtime got.
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig.js';
import type { IdmappedMount } from '../oci/spec/idmap-mounts.js';
import type { OciSpec } from '../oci/spec/types.js';
import { requestedCdiDevices } from '../cdi/names.js';

export interface K129Info {
  cdiDevices?: { requested: string[]; deviceNodes: string[] };
  userNamespace?: { uidMappings: unknown[]; gidMappings: unknown[] };
  idmappedMounts?: { containerPath: string; hostPath: string; uidMappings: unknown[]; gidMappings: unknown[] }[];
}

export function k129Info(config: ContainerConfig__Output, spec: unknown): K129Info {
  const out: K129Info = {};
  const s = (spec ?? {}) as Partial<OciSpec>;
  const requested = requestedCdiDevices(config);
  if (requested.length > 0) {
    // device nodes the request did not name itself came from CDI
    const own = new Set(config.devices.map((d) => d.container_path || d.host_path));
    out.cdiDevices = { requested, deviceNodes: (s.linux?.devices ?? []).map((d) => d.path).filter((p) => !own.has(p)) };
  }
  if (s.linux?.namespaces?.some((n) => n.type === 'user')) {
    out.userNamespace = { uidMappings: s.linux.uidMappings ?? [], gidMappings: s.linux.gidMappings ?? [] };
  }
  const mapped = ((s.mounts ?? []) as IdmappedMount[]).filter((m) => m.uidMappings?.length || m.gidMappings?.length);
  if (mapped.length > 0) {
    out.idmappedMounts = mapped.map((m) => ({ containerPath: m.destination, hostPath: m.source ?? '', uidMappings: m.uidMappings ?? [], gidMappings: m.gidMappings ?? [] }));
  }
  return out;
}
