// The disk-reading checks and lookups CreateContainer needs for the 1.29 additions, around the pure spec
// build: idmapped mounts the pod's handler or the volume's filesystem cannot honour are refused
// (FAILED_PRECONDITION naming the handler, or the path and filesystem type); the requested CDI devices are
// resolved into edits (host device numbers read) for the CDI spec step; and a user-namespaced container
// gets its mount targets made beforehand (its root cannot create them in an image owned by host root).
import { lstat, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig.js';
import type { PodRecord } from '../store/records.js';
import type { SpecInput } from '../oci/spec/input.js';
import type { OciMount, OciSpec } from '../oci/spec/types.js';
import type { CdiRegistry } from '../cdi/registry.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import { checkIdmappedMounts, type IdmapDetector } from '../oci/idmap.js';
import { errnoCode } from '../errors.js';

export interface SpecPreparer {
  /** Before the spec is built (the pod's lock is held): checks, and what it adds to the spec input. */
  prepare(config: ContainerConfig__Output, pod: Pick<PodRecord, 'id' | 'handler'>): Promise<Partial<Pick<SpecInput, 'cdi'>>>;
  /** After the spec is built, before the runtime sees it. */
  finish(spec: OciSpec, rootfs: string): Promise<void>;
}

export function k129SpecPreparer(deps: { cdi: CdiRegistry; idmap: IdmapDetector; handlers: RuntimeHandlers }): SpecPreparer {
  return {
    async prepare(config, pod) {
      if (config.mounts.some((m) => (m.uidMappings?.length ?? 0) > 0 || (m.gidMappings?.length ?? 0) > 0)) {
        await checkIdmappedMounts(config.mounts, await deps.handlers.resolve(pod.handler), deps.idmap);
      }
      const cdi = await deps.cdi.resolveForContainer(config);
      return cdi.devices.length > 0 ? { cdi } : {};
    },
    async finish(spec, rootfs) {
      if (spec.linux.namespaces.some((n) => n.type === 'user')) await makeMountTargets(spec.mounts, rootfs);
    },
  };
}

/** Filesystems the runtime makes itself: their mount points are created inside those, not in the image. */
const RUNTIME_MADE = ['/proc', '/sys', '/dev'];

/**
 * Creates missing mount points in the rootfs: a directory, or an empty file for a bind mount of a file.
 * A path that runs through a symlink is left to the runtime, which resolves it inside the rootfs; we
 * write as host root and must never follow a link the image planted.
 */
export async function makeMountTargets(mounts: readonly OciMount[], rootfs: string): Promise<void> {
  for (const m of mounts) {
    if (RUNTIME_MADE.some((p) => m.destination === p || m.destination.startsWith(`${p}/`))) continue;
    const parts = m.destination.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.length === 0 || parts.includes('..')) continue;
    let isFile = false;
    if (m.type === 'bind' && m.source) isFile = await stat(m.source).then((s) => !s.isDirectory(), () => false);
    let path = rootfs;
    for (const [i, part] of parts.entries()) {
      path = join(path, part);
      const last = i === parts.length - 1;
      const st = await lstat(path).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      });
      if (st?.isSymbolicLink()) break;
      if (st) continue;
      if (last && isFile) await writeFile(path, '', { flag: 'wx', mode: 0o644 });
      else await mkdir(path, { mode: 0o755 });
    }
  }
}
