// Idmapped mounts (KEP-127) and pod user namespaces: whether a runtime handler and a filesystem can do
// them, and the pure pieces the spec builder needs. runc 1.1.x accepts mount idmappings in config.json and
// silently ignores them (files then show as nobody), so a request we cannot honour is refused up front.
import { statfs } from 'node:fs/promises';
import { release } from 'node:os';
import type { ResolvedHandler } from './runtime-handlers.js';
import type { IDMapping__Output } from '../gen/runtime/v1/IDMapping.js';
import type { Mount__Output } from '../gen/runtime/v1/Mount.js';
import type { IdMapping } from '../store/records.js';
import { run } from '../util/exec.js';
import { checkIdMappings } from '../util/id-mappings.js';
import { errorMessage, failedPrecondition, invalidArgument } from '../errors.js';

export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface IdmapSupport {
  supported: boolean;
  /** How it was decided, for messages and `info`. */
  reason: string;
}

/** Parses `<runtime> features` output (runc ≥ 1.2 reports linux.mountExtensions.idmap.enabled). */
export function idmapFromFeatures(json: string): boolean {
  try {
    const f = JSON.parse(json) as { linux?: { mountExtensions?: { idmap?: { enabled?: boolean } } } };
    return f.linux?.mountExtensions?.idmap?.enabled === true;
  } catch {
    return false;
  }
}

/**
 * Decides per handler, once: the handler's `idmap_mounts` setting when present, else its `features`
 * command (a runtime without the command, or without idmap in it, cannot do them).
 */
export class IdmapDetector {
  private readonly cache = new Map<string, Promise<IdmapSupport>>();

  support(handler: ResolvedHandler): Promise<IdmapSupport> {
    let p = this.cache.get(handler.name);
    if (!p) {
      p = detect(handler);
      this.cache.set(handler.name, p);
    }
    return p;
  }
}

async function detect(h: ResolvedHandler): Promise<IdmapSupport> {
  if (h.idmapMounts !== undefined) return { supported: h.idmapMounts, reason: `idmap_mounts = ${h.idmapMounts} in [runtimes.${h.name}]` };
  try {
    const r = await run(h.binary, ['features'], { timeoutMs: 5000, maxOutputBytes: 1 << 20 });
    if (r.code !== 0) return { supported: false, reason: `${h.binary} has no "features" command and [runtimes.${h.name}] does not set idmap_mounts` };
    return idmapFromFeatures(r.stdout)
      ? { supported: true, reason: `${h.binary} features reports idmap mounts` }
      : { supported: false, reason: `${h.binary} features reports no idmap mount support` };
  } catch (err) {
    return { supported: false, reason: `cannot run ${h.binary} features: ${errorMessage(err)}` };
  }
}

/** Filesystems the kernel can idmap (FS_ALLOW_IDMAP), by statfs magic, with the first kernel that could. */
const IDMAP_FILESYSTEMS: Record<number, { name: string; since: [number, number] }> = {
  0xef53: { name: 'ext4', since: [5, 12] },
  0x58465342: { name: 'xfs', since: [5, 12] },
  0x4d44: { name: 'vfat', since: [5, 12] },
  0x9123683e: { name: 'btrfs', since: [5, 15] },
  0xf2f52010: { name: 'f2fs', since: [5, 18] },
  0xe0f5e1e2: { name: 'erofs', since: [5, 18] },
  0x794c7630: { name: 'overlay', since: [5, 19] },
  0x01021994: { name: 'tmpfs', since: [6, 3] },
  0x00c36400: { name: 'ceph', since: [6, 7] },
};

/** Names for filesystems that cannot be idmapped, so messages say what the volume is on. */
const OTHER_FILESYSTEMS: Record<number, string> = {
  0x6969: 'nfs',
  0x65735546: 'fuse',
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x1373: 'devfs',
  0x858458f6: 'ramfs',
  0x73717368: 'squashfs',
  0x01021997: '9p',
  0xff534d42: 'cifs',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
};

export function fsTypeName(magic: number): string {
  return IDMAP_FILESYSTEMS[magic]?.name ?? OTHER_FILESYSTEMS[magic] ?? `0x${magic.toString(16)}`;
}

export function kernelVersion(rel = release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** Whether a filesystem (statfs magic) can be idmapped on this kernel. Pure, for tests. */
export function fsCanIdmap(magic: number, kernel: [number, number]): boolean {
  const f = IDMAP_FILESYSTEMS[magic];
  if (!f) return false;
  return kernel[0] > f.since[0] || (kernel[0] === f.since[0] && kernel[1] >= f.since[1]);
}

/** FAILED_PRECONDITION naming the path and its filesystem type when it cannot be idmapped here. */
export async function checkIdmappableFs(path: string, kernel = kernelVersion()): Promise<void> {
  let magic: number;
  try {
    magic = (await statfs(path)).type;
  } catch (err) {
    throw failedPrecondition(`idmapped mount source ${path}: ${errorMessage(err)}`, { path });
  }
  if (!fsCanIdmap(magic, kernel)) {
    throw failedPrecondition(`idmapped mount source ${path} is on a ${fsTypeName(magic)} filesystem, which kernel ${kernel.join('.')} cannot idmap`, { path, fsType: fsTypeName(magic) });
  }
}

function checkMappings(list: IDMapping__Output[], what: string): OciIdMapping[] {
  return checkIdMappings(list, what).map((m) => ({ containerID: m.container_id, hostID: m.host_id, size: m.length }));
}

/** The OCI uidMappings/gidMappings of a CRI mount (both or neither, as the runtime spec requires). */
export function mountIdMappings(m: Pick<Mount__Output, 'uidMappings' | 'gidMappings' | 'container_path'>): { uidMappings: OciIdMapping[]; gidMappings: OciIdMapping[] } | undefined {
  const uids = m.uidMappings ?? [];
  const gids = m.gidMappings ?? [];
  if (uids.length === 0 && gids.length === 0) return undefined;
  if (uids.length === 0 || gids.length === 0) throw invalidArgument(`mount ${m.container_path}: uidMappings and gidMappings must be given together`, { path: m.container_path });
  return { uidMappings: checkMappings(uids, `mount ${m.container_path} uidMappings`), gidMappings: checkMappings(gids, `mount ${m.container_path} gidMappings`) };
}

/**
 * The user namespace of a container in a POD-mode userns pod: the pod's mappings (validated when the pod
 * was created, stored in its record) in OCI form. undefined = the host user namespace.
 */
export function podUserNamespace(pod: { uidMappings?: IdMapping[]; gidMappings?: IdMapping[] }): { uidMappings: OciIdMapping[]; gidMappings: OciIdMapping[] } | undefined {
  if (!pod.uidMappings?.length || !pod.gidMappings?.length) return undefined;
  const oci = (l: IdMapping[]) => l.map((m) => ({ containerID: m.containerId, hostID: m.hostId, size: m.size }));
  return { uidMappings: oci(pod.uidMappings), gidMappings: oci(pod.gidMappings) };
}

/**
 * Refuses mounts with idmappings the handler or filesystem cannot honour. Runs before the container is
 * created, so nothing starts with wrong ownership.
 */
export async function checkIdmappedMounts(mounts: readonly Mount__Output[], handler: ResolvedHandler, detector: IdmapDetector): Promise<void> {
  const mapped = mounts.filter((m) => (m.uidMappings?.length ?? 0) > 0 || (m.gidMappings?.length ?? 0) > 0);
  if (mapped.length === 0) return;
  const support = await detector.support(handler);
  if (!support.supported) {
    throw failedPrecondition(
      `runtime handler "${handler.name}" cannot do idmapped mounts (${support.reason}); mount ${mapped[0].container_path} asks for uid/gid mappings`,
      { handler: handler.name, path: mapped[0].host_path },
    );
  }
  for (const m of mapped) await checkIdmappableFs(m.host_path);
}
