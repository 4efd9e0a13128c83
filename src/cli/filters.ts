// Option parsing and list filtering shared by the client verbs (ps, pods, inspect, stats, logs): crictl's
// flag spellings turned into CRI filters, plus the client-side filters crictl applies after the rpc
// (name/namespace regular expressions, --latest/--last).
import { describeError } from './output.js';
import type { AuthConfig } from '../gen/runtime/v1/AuthConfig.js';
import type { ContainerState__Output } from '../gen/runtime/v1/ContainerState.js';
import type { PodSandboxState__Output } from '../gen/runtime/v1/PodSandboxState.js';

/** The labels kubelet puts on every pod and container, which crictl's tables show. */
export const POD_NAME_LABEL = 'io.kubernetes.pod.name';
export const POD_NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';

/** commander accumulator for repeatable options (`--label a=b --label c=d`). */
export const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** `key=value` pairs into a map (label selectors, annotations); the value may itself contain '='. */
export function keyValues(list: string[], flag = '--label'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of list) {
    const i = l.indexOf('=');
    if (i <= 0) throw new Error(`${flag} "${l}": expected key=value`);
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

export const labelSelector = (labels: string[]): Record<string, string> => keyValues(labels, '--label');

const CONTAINER_STATES: Record<string, ContainerState__Output> = {
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
  unknown: 'CONTAINER_UNKNOWN',
};

/** crictl's `--state` words for containers (case-insensitive). */
export function parseContainerState(word: string): ContainerState__Output {
  const s = CONTAINER_STATES[word.toLowerCase()];
  // crictl's words, which scripts may look for
  if (!s) throw new Error(`--state should be one of created, running, exited or unknown (got "${word}")`);
  return s;
}

/** `CONTAINER_RUNNING` -> `Running`, as crictl prints states. */
export function containerStateWord(state: string): string {
  const w = state.replace(/^CONTAINER_/, '').toLowerCase();
  return w.charAt(0).toUpperCase() + w.slice(1);
}

/** crictl's `--state` words for pods: ready / notready (case-insensitive; `not_ready` also taken). */
export function parsePodState(word: string): PodSandboxState__Output {
  const w = word.toLowerCase().replace(/^sandbox_/, '').replace(/[-_]/g, '');
  if (w === 'ready') return 'SANDBOX_READY';
  if (w === 'notready') return 'SANDBOX_NOTREADY';
  throw new Error(`--state should be ready or notready (got "${word}")`);
}

export function podStateWord(state: string): string {
  return state === 'SANDBOX_READY' ? 'Ready' : 'NotReady';
}

/** A regular expression from a filter flag; an empty pattern matches everything. */
export function compilePattern(pattern: string | undefined, flag: string): RegExp | undefined {
  if (!pattern) return undefined;
  try {
    return new RegExp(pattern);
  } catch (err) {
    throw new Error(`${flag} "${pattern}": not a valid regular expression (${(err as Error).message})`);
  }
}

export interface ListItem {
  created_at: string;
  labels: Record<string, string>;
}

export interface ClientFilter {
  /** Regular expression on the metadata name. */
  name?: string;
  /** Regular expression on the pod namespace (from the kubelet label, or the pod's own metadata). */
  namespace?: string;
  /** Only the newest one. */
  latest?: boolean;
  /** Only the newest n (0 = all). */
  last?: number;
}

/**
 * Filters a list response as crictl does after the rpc: name/namespace patterns, then newest first,
 * cut to --latest / --last.
 */
export function applyClientFilter<T extends ListItem>(items: T[], f: ClientFilter, nameOf: (t: T) => string, namespaceOf: (t: T) => string): T[] {
  const nameRe = compilePattern(f.name, '--name');
  const nsRe = compilePattern(f.namespace, '--namespace');
  const kept = items.filter((i) => (!nameRe || nameRe.test(nameOf(i))) && (!nsRe || nsRe.test(namespaceOf(i))));
  kept.sort((a, b) => (BigInt(b.created_at) > BigInt(a.created_at) ? 1 : BigInt(b.created_at) < BigInt(a.created_at) ? -1 : 0));
  const n = f.latest ? 1 : (f.last ?? 0);
  return n > 0 ? kept.slice(0, n) : kept;
}

/** crictl shows IDs cut to 13 characters unless --no-trunc. */
export function shortId(id: string, trunc = true): string {
  return trunc ? id.replace(/^sha256:/, '').slice(0, 13) : id;
}

export interface PullAuthOptions {
  creds?: string;
  auth?: string;
  username?: string;
  password?: string;
}

/** Registry credentials from crictl's flags (`--creds user:pass`, `--auth base64`, `-u`/`-p`); null if none. */
export function pullAuth(opts: PullAuthOptions): AuthConfig | null {
  const auth: AuthConfig = {};
  if (opts.creds) {
    const i = opts.creds.indexOf(':');
    auth.username = i < 0 ? opts.creds : opts.creds.slice(0, i);
    auth.password = i < 0 ? '' : opts.creds.slice(i + 1);
  }
  if (opts.auth) auth.auth = opts.auth;
  if (opts.username) auth.username = opts.username;
  if (opts.password) auth.password = opts.password;
  return Object.keys(auth).length ? auth : null;
}

/** Non-negative integer option values (`--tail 10`, `-n 3`). */
export function intOption(flag: string): (v: string) => number {
  return (v: string) => {
    if (!/^-?\d+$/.test(v.trim())) throw new Error(`${flag} "${v}": expected an integer`);
    return Number(v);
  };
}

/** Runs `fn` for each ID; every ID is tried, and the verb fails naming each one that failed (as crictl). */
export async function eachId(ids: string[], fn: (id: string) => Promise<void>): Promise<void> {
  const failures: string[] = [];
  for (const id of ids) {
    try {
      await fn(id);
    } catch (err) {
      // the same words as the top-level error printer: scripts grep for the gRPC code name
      failures.push(`${id}: ${describeError(err)}`);
    }
  }
  if (failures.length > 0) throw new Error(failures.join('\n'));
}
