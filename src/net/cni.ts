// Runs CNI plugins the way libcni does (spec 0.4.0 and 1.0.0): each plugin of a network list in turn,
// its config on stdin, CNI_* in the environment, the previous plugin's result passed along as prevResult.
// Every plugin call has a timeout. The caller persists the list it used, so DEL after a config change
// (or after a restart) runs exactly the plugins ADD ran.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { lookPath } from '../util/which.js';
import { firstCniConfigFile } from './cni-config.js';
import { SkiffError, failedPrecondition, internal, errorMessage } from '../errors.js';

export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];
const PLUGIN_TIMEOUT_MS = 60_000;

type Json = Record<string, unknown>;

/** A network list as loaded from the conf dir; `plugins` are the raw plugin configs. */
export interface CniNetworkList {
  cniVersion: string;
  name: string;
  plugins: Json[];
  /** The file it came from (for messages only). */
  file: string;
  /** the list's `disableCheck`: the runtime must not call CHECK for it */
  disableCheck?: boolean;
}

/** What one pod asks of the network: ids, netns, and the runtime (capability) arguments. */
export interface CniAttachment {
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS pairs (K8S_POD_NAME…); values that would break the K=V;K=V syntax are dropped. */
  args: Record<string, string>;
  capabilityArgs: { portMappings?: CniPortMapping[]; bandwidth?: CniBandwidth };
}

export interface CniPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

export interface CniBandwidth {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

/** Loads the first network config of `confDir`; undefined when there is none. A bad file is FAILED_PRECONDITION (the node is misconfigured). */
export async function loadCniNetwork(confDir: string): Promise<CniNetworkList | undefined> {
  const file = await firstCniConfigFile(confDir);
  if (file === undefined) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw failedPrecondition(`CNI config ${file} is not valid JSON: ${errorMessage(err)}`, { path: file });
  }
  return parseNetworkList(doc, file);
}

/** Validates a conflist (or wraps a single-plugin .conf into a list). Exported for unit tests. */
export function parseNetworkList(doc: unknown, file: string): CniNetworkList {
  const bad = (why: string) => failedPrecondition(`CNI config ${file}: ${why}`, { path: file });
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('must be a JSON object');
  const d = doc as Json;
  if (typeof d.name !== 'string' || d.name === '') throw bad('"name" must be a non-empty string');
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(d.name)) throw bad(`network name "${d.name}" has characters CNI does not allow`);
  const version = typeof d.cniVersion === 'string' ? d.cniVersion : '';
  if (!SUPPORTED_CNI_VERSIONS.includes(version)) throw bad(`cniVersion "${version}" is not supported (${SUPPORTED_CNI_VERSIONS.join(', ')})`);
  let plugins: unknown;
  if (d.plugins !== undefined) plugins = d.plugins;
  else if (typeof d.type === 'string') plugins = [d];
  else throw bad('needs a "plugins" list');
  if (!Array.isArray(plugins) || plugins.length === 0) throw bad('"plugins" must be a non-empty list');
  for (const p of plugins as unknown[]) {
    if (typeof p !== 'object' || p === null || typeof (p as Json).type !== 'string' || !/^[a-zA-Z0-9_.-]+$/.test((p as Json).type as string))
      throw bad('every plugin needs a "type" naming a plugin binary');
  }
  if (d.disableCheck !== undefined && typeof d.disableCheck !== 'boolean') throw bad('"disableCheck" must be true or false');
  return { cniVersion: version, name: d.name, plugins: plugins as Json[], file, ...(d.disableCheck === true ? { disableCheck: true } : {}) };
}

/** Plugin binaries a list needs: each plugin's type and, where it delegates addresses, its IPAM type. */
export function pluginTypes(net: CniNetworkList): string[] {
  const types: string[] = [];
  for (const p of net.plugins) {
    types.push(p.type as string);
    const ipam = p.ipam as Json | undefined;
    if (typeof ipam?.type === 'string' && ipam.type !== '') types.push(ipam.type);
  }
  return [...new Set(types)];
}

/**
 * Whether pods can get a network: a valid first config whose plugins (and IPAM plugins) are all
 * installed. `message` says what is wrong (for the NetworkReady condition).
 */
export async function networkReadiness(confDir: string, binDirs: readonly string[]): Promise<{ ready: boolean; message: string }> {
  let net: CniNetworkList | undefined;
  try {
    net = await loadCniNetwork(confDir);
  } catch (err) {
    return { ready: false, message: errorMessage(err) };
  }
  if (!net) return { ready: false, message: `no CNI network config found in ${confDir}` };
  const runner = new CniRunner(binDirs);
  for (const type of pluginTypes(net)) {
    try {
      await runner.pluginPath(type);
    } catch (err) {
      return { ready: false, message: `CNI config ${net.file}: ${errorMessage(err)}` };
    }
  }
  return { ready: true, message: '' };
}

export interface CniPluginError {
  code?: number;
  msg?: string;
  details?: string;
}

export class CniRunner {
  constructor(private readonly binDirs: readonly string[]) {}

  async pluginPath(type: string): Promise<string> {
    for (const dir of this.binDirs) {
      const found = await lookPath(join(dir, type));
      if (found) return found;
    }
    throw failedPrecondition(`CNI plugin "${type}" not found in ${this.binDirs.join(':')}`, { plugin: type });
  }

  /** The config one plugin receives: list-level name/version, runtimeConfig for what it declares it can do. */
  private pluginConfig(net: CniNetworkList, plugin: Json, att: CniAttachment, prevResult: unknown): Json {
    const conf: Json = { ...plugin, cniVersion: net.cniVersion, name: net.name };
    const caps = (plugin.capabilities ?? {}) as Record<string, unknown>;
    const runtimeConfig: Json = {};
    if (caps.portMappings === true && att.capabilityArgs.portMappings?.length) runtimeConfig.portMappings = att.capabilityArgs.portMappings;
    if (caps.bandwidth === true && att.capabilityArgs.bandwidth) runtimeConfig.bandwidth = att.capabilityArgs.bandwidth;
    if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
    if (prevResult !== undefined) conf.prevResult = prevResult;
    return conf;
  }

  private async exec(command: 'ADD' | 'DEL' | 'CHECK', net: CniNetworkList, plugin: Json, att: CniAttachment, prevResult: unknown): Promise<unknown> {
    const type = plugin.type as string;
    const path = await this.pluginPath(type);
    const args = Object.entries(att.args)
      .filter(([k, v]) => /^[A-Za-z0-9_]+$/.test(k) && /^[\x21-\x7e]*$/.test(v) && !/[;=]/.test(v))
      .map(([k, v]) => `${k}=${v}`);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: att.containerId,
      CNI_NETNS: att.netns,
      CNI_IFNAME: att.ifName,
      CNI_PATH: this.binDirs.join(':'),
      CNI_ARGS: ['IgnoreUnknown=1', ...args].join(';'),
    };
    const input = JSON.stringify(this.pluginConfig(net, plugin, att, prevResult));
    const res = await run(path, [], { env, input, timeoutMs: PLUGIN_TIMEOUT_MS, maxOutputBytes: 1024 * 1024 });
    if (res.code !== 0) {
      let why = res.stderr.trim() || res.stdout.trim() || `exit ${res.code ?? res.signal}`;
      try {
        const e = JSON.parse(res.stdout) as CniPluginError;
        if (e.msg) why = `${e.msg}${e.details ? `: ${e.details}` : ''}`;
      } catch {
        // not a JSON error: keep the raw text
      }
      throw internal(`CNI ${command} failed in plugin "${type}" of network "${net.name}": ${why.slice(0, 2000)}`, { plugin: type });
    }
    if (command !== 'ADD') return undefined;
    try {
      return JSON.parse(res.stdout) as unknown;
    } catch {
      throw internal(`CNI plugin "${type}" printed no JSON result for ADD`, { plugin: type });
    }
  }

  /** ADD through the whole list; the last plugin's result is the network's result. */
  async add(net: CniNetworkList, att: CniAttachment): Promise<unknown> {
    let result: unknown;
    for (const plugin of net.plugins) result = await this.exec('ADD', net, plugin, att, result);
    return result;
  }

  /**
   * DEL through the list in reverse. Every plugin is called even when one fails, so a half-done ADD
   * (e.g. portmap failed after bridge took a lease) releases what it can; a missing plugin binary has
   * nothing to release and is skipped. Returns the failures (empty = clean).
   */
  async del(net: CniNetworkList, att: CniAttachment, prevResult: unknown): Promise<string[]> {
    const failures: string[] = [];
    for (const plugin of [...net.plugins].reverse()) {
      try {
        await this.exec('DEL', net, plugin, att, prevResult);
      } catch (err) {
        if (err instanceof SkiffError && err.kind === 'failed_precondition') continue;
        failures.push(errorMessage(err));
      }
    }
    return failures;
  }

  /**
   * CHECK (spec ≥ 0.4.0) through the whole list: throws when the network of the attachment is not what ADD
   * made. Returns false when CHECK does not apply (0.3.x, or the list disables it) and nothing was run.
   */
  async check(net: CniNetworkList, att: CniAttachment, prevResult: unknown): Promise<boolean> {
    if (net.cniVersion.startsWith('0.3') || net.disableCheck) return false;
    for (const plugin of net.plugins) await this.exec('CHECK', net, plugin, att, prevResult);
    return true;
  }
}

/** Pod IPs from a CNI result (0.3.x/0.4.0/1.0.0 share the shape): IPv4 first, then IPv6, no prefix length. */
export function podIpsFromResult(result: unknown): string[] {
  if (typeof result !== 'object' || result === null) return [];
  const r = result as { ips?: { address?: unknown; interface?: unknown }[]; interfaces?: { name?: unknown; sandbox?: unknown }[] };
  const ifaces = r.interfaces ?? [];
  const addrs = (r.ips ?? [])
    .filter((ip) => {
      // Only addresses of interfaces inside the pod (sandbox set); no interface index = the pod's.
      if (typeof ip.interface !== 'number') return true;
      const iface = ifaces[ip.interface];
      return iface === undefined || (typeof iface.sandbox === 'string' && iface.sandbox !== '');
    })
    .map((ip) => (typeof ip.address === 'string' ? ip.address.split('/')[0] : ''))
    .filter((a) => a !== '');
  const v4 = addrs.filter((a) => !a.includes(':'));
  const v6 = addrs.filter((a) => a.includes(':'));
  return [...new Set([...v4, ...v6])];
}
