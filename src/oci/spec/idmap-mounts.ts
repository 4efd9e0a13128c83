// User namespace and idmapped mounts (KEP-127). A container of a POD-mode userns pod joins the user
// namespace the pod pinned (the namespaces step does that; the pod's other namespaces belong to it). A pod
// without a pinned one (recorded by an older skiff) gets a new user namespace with the pod's mappings,
// with the adjustments below for namespaces the host's user namespace owns. Each request
// mount with uid/gid mappings gets them in config.json, so files keep their owners as seen from inside.
// Whether the handler and the volume's filesystem can honour them was checked before (src/oci/idmap.ts).
import type { OciMount, OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { mountIdMappings, podUserNamespace, type OciIdMapping } from '../idmap.js';
import { invalidArgument } from '../../errors.js';

/** An OCI mount that may carry idmappings (runtime-spec 1.1 `uidMappings`/`gidMappings`). */
export type IdmappedMount = OciMount & { uidMappings?: OciIdMapping[]; gidMappings?: OciIdMapping[] };

export function withUserNamespace(spec: OciSpec, input: SpecInput): OciSpec {
  const userns = podUserNamespace(input.pod);
  if (!userns || spec.linux.namespaces.some((n) => n.type === 'user')) return spec;
  // A joined UTS namespace belongs to the host's user namespace: the new one may not set its name (the
  // pod set it when it made the namespace), so the runtime must not try.
  const joinedUts = spec.linux.namespaces.some((n) => n.type === 'uts' && n.path);
  // Likewise only the host's user namespace may mount mqueue for a joined IPC namespace (runc fails with
  // EPERM). The mount only lists queues; mq_open and friends work without it.
  const joinedIpc = spec.linux.namespaces.some((n) => n.type === 'ipc' && n.path);
  // And sysfs for a joined network namespace: a read-only bind of the host's /sys instead (what crun does
  // by itself, and runc for containers without a network namespace of their own).
  const joinedNet = spec.linux.namespaces.some((n) => n.type === 'network' && n.path);
  const mounts = spec.mounts
    .filter((m) => !(joinedIpc && m.type === 'mqueue'))
    .map((m) => (joinedNet && m.type === 'sysfs' ? { destination: m.destination, type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] } : m));
  return {
    ...spec,
    hostname: joinedUts ? undefined : spec.hostname,
    mounts,
    linux: { ...spec.linux, namespaces: [...spec.linux.namespaces, { type: 'user' }], uidMappings: userns.uidMappings, gidMappings: userns.gidMappings },
  };
}

export function withIdmappedMounts(spec: OciSpec, input: SpecInput): OciSpec {
  const mapped = new Map<string, NonNullable<ReturnType<typeof mountIdMappings>>>();
  for (const m of input.config.mounts) {
    const maps = mountIdMappings(m);
    if (maps) mapped.set(m.container_path, maps);
  }
  if (mapped.size === 0) return spec;
  // The mappings are relative to the container's user namespace: without one they mean nothing, and the
  // kubelet only sends them for pods with user namespaces.
  if (!spec.linux.namespaces.some((n) => n.type === 'user')) {
    const path = [...mapped.keys()][0];
    throw invalidArgument(`mount ${path} has uid/gid mappings but pod ${input.pod.id} has no user namespace (userns_options mode POD)`, { pod: input.pod.id, path });
  }
  const mounts = spec.mounts.map((m): IdmappedMount => {
    const maps = mapped.get(m.destination);
    return maps && m.type === 'bind' ? { ...m, uidMappings: maps.uidMappings, gidMappings: maps.gidMappings } : m;
  });
  return { ...spec, mounts };
}
