// Turns resolved CDI edits into OCI runtime-spec changes. applyCdiEdits is pure (the spec builder calls
// it as one of its steps); completeDeviceNodes is the one step that reads the host (device numbers).
import { stat } from 'node:fs/promises';
import { failedPrecondition, errorMessage } from '../errors.js';
import type { CdiContainerEdits, CdiDeviceNode } from './types.js';

/** The parts of an OCI runtime spec (config.json) that CDI edits touch. */
export interface OciHook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}
export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
  uidMappings?: { containerID: number; hostID: number; size: number }[];
  gidMappings?: { containerID: number; hostID: number; size: number }[];
}
export interface OciLinuxDevice {
  path: string;
  type: string;
  major?: number;
  minor?: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}
export interface OciDeviceCgroupRule {
  allow: boolean;
  type?: string;
  major?: number;
  minor?: number;
  access?: string;
}
export type OciHookStage = 'prestart' | 'createRuntime' | 'createContainer' | 'startContainer' | 'poststart' | 'poststop';
export interface OciSpecForCdi {
  process?: { env?: string[]; user?: { uid: number; gid: number; additionalGids?: number[] } };
  mounts?: OciMount[];
  hooks?: Partial<Record<OciHookStage, OciHook[]>>;
  linux?: { devices?: OciLinuxDevice[]; resources?: { devices?: OciDeviceCgroupRule[] } };
}

/** A device node whose type and numbers are known (see completeDeviceNodes). */
export type CompleteDeviceNode = CdiDeviceNode & { type: string };

function envKey(e: string): string {
  const i = e.indexOf('=');
  return i < 0 ? e : e.slice(0, i);
}

function depth(path: string): number {
  return path.split('/').filter(Boolean).length;
}

/**
 * Returns a new spec with the edits applied in order: env (a later KEY replaces an earlier one), device
 * nodes (replacing one at the same path, and allowed in the device cgroup), mounts (replacing one at the
 * same destination; CDI mounts sorted parents-first), hooks per stage, additional GIDs. Device nodes must
 * be complete (run completeDeviceNodes first).
 */
export function applyCdiEdits<S extends OciSpecForCdi>(spec: S, edits: readonly CdiContainerEdits[]): S {
  if (edits.length === 0) return spec;
  const out = structuredClone(spec);
  const env = [...(out.process?.env ?? [])];
  const devices = [...(out.linux?.devices ?? [])];
  const rules = [...(out.linux?.resources?.devices ?? [])];
  let mounts = [...(out.mounts ?? [])];
  const cdiMounts: OciMount[] = [];
  const hooks: Partial<Record<OciHookStage, OciHook[]>> = { ...(out.hooks ?? {}) };
  const gids = [...(out.process?.user?.additionalGids ?? [])];

  for (const e of edits) {
    for (const kv of e.env ?? []) {
      const key = envKey(kv);
      const at = env.findIndex((x) => envKey(x) === key);
      if (at >= 0) env[at] = kv;
      else env.push(kv);
    }
    for (const n of e.deviceNodes ?? []) {
      if (n.type === undefined || n.type === '') throw new Error(`CDI device node ${n.path} has no type: call completeDeviceNodes first`);
      const dev: OciLinuxDevice = { path: n.path, type: n.type };
      if (n.type !== 'p') {
        dev.major = n.major;
        dev.minor = n.minor;
      }
      if (n.fileMode !== undefined) dev.fileMode = n.fileMode;
      if (n.uid !== undefined) dev.uid = n.uid;
      if (n.gid !== undefined) dev.gid = n.gid;
      const at = devices.findIndex((d) => d.path === n.path);
      if (at >= 0) devices[at] = dev;
      else devices.push(dev);
      if (n.type === 'b' || n.type === 'c' || n.type === 'u') {
        rules.push({ allow: true, type: n.type === 'u' ? 'c' : n.type, major: n.major, minor: n.minor, access: n.permissions || 'rwm' });
      }
    }
    for (const m of e.mounts ?? []) {
      const options = [...(m.options ?? [])];
      const type = m.type || 'bind';
      if (type === 'bind' && !options.includes('bind') && !options.includes('rbind')) options.push('rbind');
      mounts = mounts.filter((x) => x.destination !== m.containerPath);
      const at = cdiMounts.findIndex((x) => x.destination === m.containerPath);
      const mount: OciMount = { destination: m.containerPath, type, source: m.hostPath, options };
      if (at >= 0) cdiMounts[at] = mount;
      else cdiMounts.push(mount);
    }
    for (const h of e.hooks ?? []) {
      const stage = h.hookName as OciHookStage;
      const hook: OciHook = { path: h.path };
      if (h.args) hook.args = [...h.args];
      if (h.env) hook.env = [...h.env];
      if (h.timeout !== undefined) hook.timeout = h.timeout;
      hooks[stage] = [...(hooks[stage] ?? []), hook];
    }
    for (const g of e.additionalGids ?? []) {
      // gid 0 is never added: CDI treats it as "no group" and it would grant root's group.
      if (g !== 0 && !gids.includes(g)) gids.push(g);
    }
  }

  cdiMounts.sort((a, b) => depth(a.destination) - depth(b.destination));
  if (out.process || env.length > 0 || gids.length > 0) {
    out.process ??= {};
    out.process.env = env;
    if (gids.length > 0) {
      out.process.user ??= { uid: 0, gid: 0 };
      out.process.user.additionalGids = gids;
    }
  }
  out.mounts = [...mounts, ...cdiMounts];
  if (Object.keys(hooks).length > 0) out.hooks = hooks;
  out.linux ??= {};
  out.linux.devices = devices;
  out.linux.resources ??= {};
  out.linux.resources.devices = rules;
  return out;
}

/** Linux dev_t split, as glibc's major()/minor(). */
export function splitDevT(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major: Number(major & 0xffffffffn), minor: Number(minor & 0xffffffffn) };
}

/**
 * Fills type/major/minor (and the file mode when absent) of device nodes from the host node at hostPath
 * (or path). A missing host node is FAILED_PRECONDITION naming it.
 */
export async function completeDeviceNodes(edits: readonly CdiContainerEdits[]): Promise<CdiContainerEdits[]> {
  const out: CdiContainerEdits[] = [];
  for (const e of edits) {
    if (!e.deviceNodes || e.deviceNodes.length === 0) {
      out.push(e);
      continue;
    }
    const nodes: CompleteDeviceNode[] = [];
    for (const n of e.deviceNodes) {
      const known = n.type !== undefined && n.type !== '' && (n.type === 'p' || (n.major !== undefined && n.minor !== undefined));
      if (known) {
        nodes.push({ ...n, type: n.type! });
        continue;
      }
      const host = n.hostPath || n.path;
      let st;
      try {
        st = await stat(host, { bigint: true });
      } catch (err) {
        throw failedPrecondition(`CDI device node ${host}: cannot read it on the host: ${errorMessage(err)}`, { path: host });
      }
      const type = st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : st.isFIFO() ? 'p' : undefined;
      if (type === undefined) throw failedPrecondition(`CDI device node ${host} is not a device on the host`, { path: host });
      if (n.type && n.type !== type && !(n.type === 'u' && type === 'c')) {
        throw failedPrecondition(`CDI device node ${host}: spec says type "${n.type}" but the host node is "${type}"`, { path: host });
      }
      const { major, minor } = splitDevT(st.rdev);
      nodes.push({
        ...n,
        type: n.type || type,
        major: type === 'p' ? undefined : (n.major ?? major),
        minor: type === 'p' ? undefined : (n.minor ?? minor),
        fileMode: n.fileMode ?? Number(st.mode & 0o777n),
      });
    }
    out.push({ ...e, deviceNodes: nodes });
  }
  return out;
}
