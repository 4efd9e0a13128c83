// Registry credentials and challenges: Basic and Bearer (token server named by WWW-Authenticate's realm,
// service and scope). Credentials come from the PullImage request (username/password, auth, identity_token,
// registry_token) or from a docker-style config.json. Tokens are cached per host+scope until `expires_in`.
import { readFile } from 'node:fs/promises';
import { errnoCode } from '../errors.js';

export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker's identitytoken). */
  identityToken?: string;
  /** A bearer token to send as-is. */
  registryToken?: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (several challenges possible). */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : (header ?? '');
  const out: Challenge[] = [];
  const re = /([A-Za-z][A-Za-z0-9-]*)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?\s*/g;
  let current: Challenge | undefined;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null && m[0] !== '') {
    if (m[2] === undefined && m[3] === undefined) {
      current = { scheme: m[1].toLowerCase(), params: {} };
      out.push(current);
    } else if (current) {
      current.params[m[1].toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
    }
  }
  return out;
}

/** From CRI AuthConfig fields (snake_case as grpc hands them). Empty fields mean "not given". */
export function credentialsFromAuthConfig(a: { username?: string; password?: string; auth?: string; identity_token?: string; registry_token?: string } | null | undefined): Credentials | undefined {
  if (!a) return undefined;
  const c: Credentials = {};
  if (a.username) c.username = a.username;
  if (a.password) c.password = a.password;
  if (a.auth && !c.username) {
    const decoded = Buffer.from(a.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) {
      c.username = decoded.slice(0, i);
      c.password = decoded.slice(i + 1);
    }
  }
  if (a.identity_token) c.identityToken = a.identity_token;
  if (a.registry_token) c.registryToken = a.registry_token;
  return Object.keys(c).length ? c : undefined;
}

/** Reads `auths` of a docker config.json; a missing file means no credentials. */
export async function credentialsFromDockerConfig(file: string | undefined, host: string): Promise<Credentials | undefined> {
  if (!file) return undefined;
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }> };
  try {
    doc = JSON.parse(await readFile(file, 'utf8')) as typeof doc;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  const auths = doc.auths ?? {};
  const keys = host === 'docker.io' ? ['docker.io', 'index.docker.io', 'https://index.docker.io/v1/', 'registry-1.docker.io'] : [host, `https://${host}`, `http://${host}`];
  for (const k of keys) {
    const e = auths[k];
    if (e) return credentialsFromAuthConfig({ auth: e.auth, username: e.username, password: e.password, identity_token: e.identitytoken, registry_token: e.registrytoken });
  }
  return undefined;
}

/** Docker Hub answers to several names; credentials filed under any of them are for docker.io. */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * The host an AuthConfig.server_address names, as containerd compares it: scheme and path dropped
 * ("https://index.docker.io/v1/" -> docker.io), case folded, Docker Hub's aliases folded into docker.io.
 */
export function normalizeAuthHost(address: string): string {
  const host = address.trim().toLowerCase().replace(/^[a-z][a-z0-9+.-]*:\/\//, '').split('/')[0] ?? '';
  return DOCKER_HUB_ALIASES.has(host) ? 'docker.io' : host;
}

/**
 * Whether credentials a PullImage request carries may go to `host` (an endpoint's auth host, and so its token
 * realm): only the host server_address names, or without one only the reference's own registry. Mirrors and
 * any other host get none.
 */
export function requestCredentialsFor(host: string, serverAddress: string | undefined, registry: string): boolean {
  const want = normalizeAuthHost(serverAddress || registry);
  return want !== '' && normalizeAuthHost(host) === want;
}

export function basicHeader(c: Credentials): string | undefined {
  if (c.username === undefined) return undefined;
  return `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}`;
}
