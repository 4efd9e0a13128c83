// Pod sysctls: only the namespaced ones, and only when the pod owns that namespace. Anything that would
// touch the host (a net.* sysctl on a hostNetwork pod, kernel.shm* on a hostIPC pod, a non-namespaced
// key) is INVALID_ARGUMENT, checked before anything is created. Values are written inside the pod's
// namespaces by a short `nsenter` script; the host's /proc/sys is never written.
import { invalidArgument, internal } from '../errors.js';
import { run } from '../util/exec.js';

export interface CheckedSysctl {
  key: string;
  value: string;
  /** path below /proc/sys */
  path: string;
  ns: 'net' | 'ipc';
}

const IPC_KEYS = /^kernel\.(shm[a-z_]+|msg[a-z_]+|sem)$|^fs\.mqueue\.[a-z_]+$/;

const swapDotsAndSlashes = (s: string) => s.replace(/[./]/g, (c) => (c === '.' ? '/' : '.'));

/**
 * kubelet's sysctl names use '.' or '/' as separator, whichever comes first; the other character is part
 * of a component (an interface "eth0.100": net.ipv4.conf.eth0/100.forwarding or
 * net/ipv4/conf/eth0.100/forwarding). Returns the canonical dotted name and its /proc/sys path.
 */
function normalize(key: string): { name: string; path: string } {
  const slashFirst = /^[^./]*\//.test(key);
  return slashFirst ? { name: swapDotsAndSlashes(key), path: key } : { name: key, path: swapDotsAndSlashes(key) };
}

export function checkSysctls(sysctls: Record<string, string>, own: { net: boolean; ipc: boolean }): CheckedSysctl[] {
  const out: CheckedSysctl[] = [];
  for (const [key, value] of Object.entries(sysctls)) {
    const bad = (why: string) => invalidArgument(`sysctl "${key}": ${why}`, { sysctl: key });
    if (!/^[a-zA-Z0-9_./-]+$/.test(key) || key.split(/[./]/).some((p) => p === '' || p === '..')) throw bad('not a valid sysctl name');
    if (/[\0\n]/.test(value)) throw bad('value must be a single line');
    const { name, path } = normalize(key);
    let ns: 'net' | 'ipc';
    if (name.startsWith('net.')) ns = 'net';
    else if (IPC_KEYS.test(name)) ns = 'ipc';
    else throw bad('not a namespaced sysctl (only net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* are allowed)');
    if (ns === 'net' && !own.net) throw bad('net.* sysctls need the pod network namespace (not allowed with hostNetwork)');
    if (ns === 'ipc' && !own.ipc) throw bad('IPC sysctls need the pod IPC namespace (not allowed with hostIPC)');
    out.push({ key, value, path, ns });
  }
  return out;
}

/** Writes the sysctls inside the pod's namespaces (one process for all of them). */
export async function applySysctls(list: readonly CheckedSysctl[], ns: { net?: string; ipc?: string }): Promise<void> {
  if (list.length === 0) return;
  const enter: string[] = [];
  if (list.some((s) => s.ns === 'net')) enter.push(`--net=${ns.net}`);
  if (list.some((s) => s.ns === 'ipc')) enter.push(`--ipc=${ns.ipc}`);
  // Exit 3 marks "the kernel refused this key or value" (the caller's fault); any other failure (nsenter
  // missing, namespace gone, timeout) keeps its own kind.
  const script = 'while [ $# -gt 0 ]; do printf "%s" "$2" > "/proc/sys/$1" || { echo "cannot set $1" >&2; exit 3; }; shift 2; done';
  const res = await run('nsenter', [...enter, '--', 'sh', '-c', script, 'sh', ...list.flatMap((s) => [s.path, s.value])], { timeoutMs: 10_000 });
  if (res.code === 3 && /cannot set /.test(res.stderr)) throw invalidArgument(`cannot apply sysctls: ${res.stderr.trim().slice(0, 2000)}`);
  if (res.code !== 0) throw internal(`cannot apply sysctls: nsenter failed: ${(res.stderr.trim() || `exit ${res.code ?? res.signal}`).slice(0, 2000)}`, { command: 'nsenter' });
}
