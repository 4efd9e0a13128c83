// Where to fetch a registry's content from: containerd's `certs.d` format, so an existing
// /etc/containerd/certs.d tree works unchanged. For registry H, `<config_path>/H/hosts.toml` (or
// `_default/hosts.toml`) lists mirrors tried in order, then `server` (the upstream itself):
//   server = "https://registry.example"
//   [host."http://mirror.local:5000"]
//     capabilities = ["pull", "resolve"]
//     skip_verify = true
//     ca = "/etc/certs/mirror.pem"
//     override_path = false
//     [host."http://mirror.local:5000".header]
//       x-custom = "1"
// skiff's own `registry.mirrors` / `registry.insecure` config keys add to this. Loopback registries are plain
// HTTP unless a hosts.toml says otherwise.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { errnoCode, invalidArgument, errorMessage } from '../errors.js';
import { apiHost, isLoopbackHost, DEFAULT_REGISTRY } from './reference.js';

export interface RegistryEndpoint {
  /** Base URL the API paths hang off: "https://host/v2" normally, the URL as given with override_path. */
  base: string;
  /** Host name as the auth layer keys credentials (the registry as named for upstream and mirrors). */
  authHost: string;
  capabilities: Set<'pull' | 'resolve' | 'push'>;
  skipVerify: boolean;
  ca: string[];
  headers: Record<string, string>;
  isMirror: boolean;
}

export interface HostsOptions {
  configPath: string;
  mirrors: Record<string, string[]>;
  insecure: string[];
}

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return [];
}

function endpointFromUrl(url: string, table: Record<string, unknown>, isMirror: boolean): RegistryEndpoint {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidArgument(`registry host "${url}" is not a URL`);
  }
  const override = table.override_path === true;
  const path = u.pathname.replace(/\/+$/, '');
  const base = `${u.protocol}//${u.host}${override ? path : `${path}/v2`}`;
  const caps = strings(table.capabilities);
  const headers: Record<string, string> = {};
  if (typeof table.header === 'object' && table.header !== null) {
    for (const [k, v] of Object.entries(table.header as Record<string, unknown>)) headers[k] = strings(v).join(', ');
  }
  return {
    base,
    authHost: u.host,
    capabilities: new Set((caps.length ? caps : ['pull', 'resolve', 'push']) as ('pull' | 'resolve' | 'push')[]),
    skipVerify: table.skip_verify === true,
    ca: strings(table.ca),
    headers,
    isMirror,
  };
}

async function readHostsToml(configPath: string, registry: string): Promise<Record<string, unknown> | undefined> {
  // containerd names the dir after the host; ports are kept ("localhost:5000"); `_default` applies to all
  for (const dir of [registry, registry.replace(/:(\d+)$/, '_$1'), '_default']) {
    const file = join(configPath, dir, 'hosts.toml');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') continue;
      throw err;
    }
    try {
      return parseToml(text);
    } catch (err) {
      throw invalidArgument(`${file}: not valid TOML: ${errorMessage(err)}`, { file });
    }
  }
  return undefined;
}

/** Endpoints for `registry` in the order to try them: mirrors first, the upstream last. */
export async function resolveEndpoints(registry: string, opts: HostsOptions): Promise<RegistryEndpoint[]> {
  const out: RegistryEndpoint[] = [];
  for (const m of opts.mirrors[registry] ?? []) out.push(endpointFromUrl(m.includes('://') ? m : `https://${m}`, {}, true));
  const doc = opts.configPath ? await readHostsToml(opts.configPath, registry) : undefined;
  const insecure = opts.insecure.includes(registry) || isLoopbackHost(registry);
  const defaultServer = `${insecure ? 'http' : 'https'}://${apiHost(registry)}`;
  let server = defaultServer;
  let serverTable: Record<string, unknown> = {};
  if (doc) {
    const hosts = (typeof doc.host === 'object' && doc.host !== null ? doc.host : {}) as Record<string, Record<string, unknown>>;
    for (const [url, table] of Object.entries(hosts)) out.push(endpointFromUrl(url.includes('://') ? url : `https://${url}`, table, true));
    if (typeof doc.server === 'string') server = doc.server;
    serverTable = doc;
  }
  const upstream = endpointFromUrl(server, serverTable, false);
  // Credentials for Docker Hub are filed under docker.io / index.docker.io, not its API host.
  if (registry === DEFAULT_REGISTRY) upstream.authHost = registry;
  else upstream.authHost = registry;
  out.push(upstream);
  return out;
}
