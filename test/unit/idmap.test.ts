// Idmapped mounts: handler detection (config, `features`), filesystem checks via statfs, and the pure
// mapping helpers. Uses the real runc 1.1.5 and crun 1.8.1 installed here.
import { describe, it, expect } from 'vitest';
import { IdmapDetector, idmapFromFeatures, fsCanIdmap, checkIdmappableFs, checkIdmappedMounts, mountIdMappings, podUserNamespace, kernelVersion } from '../../src/oci/idmap.js';
import type { ResolvedHandler } from '../../src/oci/runtime-handlers.js';
import { lookPath } from '../../src/util/which.js';
import type { Mount__Output } from '../../src/gen/runtime/v1/Mount.js';

const handler = async (name: string, idmapMounts?: boolean): Promise<ResolvedHandler> => ({ name, path: name, root: '/tmp/x', idmapMounts, binary: (await lookPath(name)) ?? `/nonexistent/${name}` });
const mapping = [{ host_id: 100000, container_id: 0, length: 65536 }];
const mount = (host: string, maps = true): Mount__Output =>
  ({ container_path: '/data', host_path: host, readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uidMappings: maps ? mapping : [], gidMappings: maps ? mapping : [] });

describe('idmap support per handler', () => {
  it('reads idmap support from features JSON', () => {
    expect(idmapFromFeatures('{"linux":{"mountExtensions":{"idmap":{"enabled":true}}}}')).toBe(true);
    expect(idmapFromFeatures('{"linux":{"namespaces":["user"]}}')).toBe(false);
    expect(idmapFromFeatures('not json')).toBe(false);
  });

  it('runc 1.1.5: features has no idmap entry -> unsupported', async () => {
    const s = await new IdmapDetector().support(await handler('runc'));
    expect(s).toMatchObject({ supported: false });
    expect(s.reason).toContain('no idmap');
  });

  it('crun 1.8.1: no features command -> unsupported unless the config says so', async () => {
    expect((await new IdmapDetector().support(await handler('crun'))).supported).toBe(false);
    expect(await new IdmapDetector().support(await handler('crun', true))).toEqual({ supported: true, reason: 'idmap_mounts = true in [runtimes.crun]' });
  });

  it('refuses mapped mounts on an unsupporting handler, naming handler and mount', async () => {
    const err = (await checkIdmappedMounts([mount("/tmp")], await handler("runc"), new IdmapDetector()).catch((e: unknown) => e)) as Error & { kind: string };
    expect(err).toMatchObject({ kind: 'failed_precondition' });
    expect(err.message).toContain('"runc" cannot do idmapped mounts');
    expect(err.message).toContain('/data');
    // unmapped mounts need nothing
    await expect(checkIdmappedMounts([mount('/tmp', false)], await handler('runc'), new IdmapDetector())).resolves.toBeUndefined();
    await expect(checkIdmappedMounts([mount('/tmp')], await handler('crun', true), new IdmapDetector())).resolves.toBeUndefined();
  });
});

describe('idmappable filesystems', () => {
  it('knows which filesystems and kernels can idmap', () => {
    expect(fsCanIdmap(0x01021994, [6, 2])).toBe(false); // tmpfs before 6.3
    expect(fsCanIdmap(0x01021994, [6, 3])).toBe(true);
    expect(fsCanIdmap(0x794c7630, [5, 18])).toBe(false); // overlay before 5.19
    expect(fsCanIdmap(0xef53, [5, 12])).toBe(true);
    expect(fsCanIdmap(0x6969, [9, 9])).toBe(false); // nfs never
  });

  it('names the path and fs type of a volume that cannot be idmapped', async () => {
    await expect(checkIdmappableFs('/proc/self')).rejects.toThrow(/\/proc\/self is on a proc filesystem/);
    await expect(checkIdmappableFs('/dev/shm', [6, 2])).rejects.toThrow(/\/dev\/shm is on a tmpfs filesystem, which kernel 6.2 cannot idmap/);
    await expect(checkIdmappableFs('/dev/shm', kernelVersion())).resolves.toBeUndefined(); // kernel here is >= 6.3
    await expect(checkIdmappableFs('/nonexistent-skiff-vol')).rejects.toThrow(/nonexistent-skiff-vol/);
  });
});

describe('mapping helpers', () => {
  it('turns CRI mappings into OCI ones', () => {
    expect(mountIdMappings(mount('/x'))).toEqual({ uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }], gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }] });
    expect(mountIdMappings(mount('/x', false))).toBeUndefined();
    expect(() => mountIdMappings({ container_path: '/d', uidMappings: mapping, gidMappings: [] })).toThrow(/together/);
    expect(() => mountIdMappings({ container_path: '/d', uidMappings: [{ host_id: 1, container_id: 0, length: 0 }], gidMappings: mapping })).toThrow(/length/);
  });

  it('refuses mount mappings the kernel would: (uid_t)-1, overlaps, more than 340 entries', () => {
    const mount = (uids: { container_id: number; host_id: number; length: number }[]) => ({ container_path: '/m', uidMappings: uids, gidMappings: [{ container_id: 0, host_id: 0, length: 1 }] });
    for (const uids of [
      [{ container_id: 4294967295, host_id: 0, length: 1 }],
      [{ container_id: 0, host_id: 0, length: 10 }, { container_id: 9, host_id: 100, length: 1 }],
      Array.from({ length: 341 }, (_, i) => ({ container_id: i, host_id: i, length: 1 })),
    ]) {
      expect(() => mountIdMappings(mount(uids) as unknown as Mount__Output)).toThrow(expect.objectContaining({ kind: 'invalid_argument' }));
    }
    expect(mountIdMappings(mount([{ container_id: 0, host_id: 1000, length: 10 }]) as unknown as Mount__Output)?.uidMappings).toEqual([{ containerID: 0, hostID: 1000, size: 10 }]);
  });

  it('gives a userns pod\'s containers the pod\'s mappings', () => {
    expect(podUserNamespace({})).toBeUndefined();
    expect(podUserNamespace({ uidMappings: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMappings: [{ containerId: 0, hostId: 200000, size: 10 }] })).toEqual({
      uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: 200000, size: 10 }],
    });
  });
});
