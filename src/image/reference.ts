// Image references as users type them, normalised the way docker and containerd do:
//   busybox                 -> docker.io/library/busybox:latest
//   host:5000/a/b:tag       -> host:5000/a/b:tag
//   name@sha256:<64 hex>    -> docker.io/library/name@sha256:…
//   name:tag@sha256:…       -> both kept; the digest decides what is pulled.
// Malformed references are INVALID_ARGUMENT naming the reason.
import { invalidArgument } from '../errors.js';

export const DEFAULT_REGISTRY = 'docker.io';
/** Docker Hub's API host: the name people use (docker.io) is not where the API lives. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

export interface ImageReference {
  /** Registry host as named (docker.io for Hub), with port if any, e.g. "127.0.0.1:5000". */
  registry: string;
  /** Repository path inside the registry, e.g. "library/busybox". */
  repository: string;
  tag?: string;
  digest?: string;
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]{1,5})?$/;

export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

function bad(ref: string, why: string): never {
  throw invalidArgument(`invalid image reference "${ref.slice(0, 300)}": ${why}`, { image: ref.slice(0, 300) });
}

/** A first path component is a registry host when it has a '.', a ':' or is "localhost" (docker's rule). */
function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[');
}

export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (ref === '') bad(input, 'empty');
  if (ref.length > 4096) bad(input, 'longer than 4096 characters');
  if (/\s/.test(ref)) bad(input, 'contains whitespace');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) bad(input, 'digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) bad(input, `tag "${tag}" may use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')`);
  }
  if (rest === '') bad(input, 'no repository name');
  const parts = rest.split('/');
  let registry = DEFAULT_REGISTRY;
  if (parts.length > 1 && looksLikeHost(parts[0])) {
    registry = parts.shift()!;
    if (!HOST_RE.test(registry)) bad(input, `registry host "${registry}" is not a valid host[:port]`);
    const port = /:(\d+)$/.exec(registry);
    if (port && Number(port[1]) > 65535) bad(input, `port ${port[1]} out of range`);
  }
  if (registry === 'index.docker.io') registry = DEFAULT_REGISTRY;
  for (const p of parts) {
    if (p === '') bad(input, 'empty path component');
    if (!PATH_COMPONENT_RE.test(p)) bad(input, `path component "${p}" must be lowercase letters and digits separated by '.', '_', '__' or '-'`);
  }
  if (registry === DEFAULT_REGISTRY && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (registry.length + 1 + repository.length > 255) bad(input, 'repository name longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** Whether the user typed a tag or digest (parseReference adds ":latest" when not). */
export function hasTagOrDigest(input: string): boolean {
  const ref = input.trim();
  return ref.includes('@') || ref.lastIndexOf(':') > ref.lastIndexOf('/');
}

/** "registry/repository", the name without tag or digest. */
export function repoName(r: ImageReference): string {
  return `${r.registry}/${r.repository}`;
}

/** The full normalised string: name:tag, name@digest or name:tag@digest. */
export function formatReference(r: ImageReference): string {
  return `${repoName(r)}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** name:tag, or undefined when the reference has no tag. */
export function taggedName(r: ImageReference): string | undefined {
  return r.tag ? `${repoName(r)}:${r.tag}` : undefined;
}

/** Host to talk to for the API (Hub's name differs from its API host). */
export function apiHost(registry: string): string {
  return registry === DEFAULT_REGISTRY ? DOCKER_HUB_API_HOST : registry;
}

/** Loopback registries are plain HTTP unless configured otherwise, as docker and containerd do. */
export function isLoopbackHost(hostPort: string): boolean {
  const host = hostPort.startsWith('[') ? hostPort.slice(1, hostPort.indexOf(']')) : hostPort.replace(/:\d+$/, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
