// Security steps: capabilities, privileged mode, no_new_privs, masked/read-only paths, seccomp, AppArmor.
import type { OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { invalidArgument } from '../../errors.js';
import { runtimeDefaultSeccomp } from './seccomp.js';

/** The capability set containers get by default (the one containerd and CRI-O use). */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** Every capability of this kernel generation, for privileged containers and "ALL". */
export const ALL_CAPABILITIES = [
  ...DEFAULT_CAPABILITIES, 'CAP_DAC_READ_SEARCH', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT',
  'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_LEASE', 'CAP_AUDIT_CONTROL', 'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

export const DEFAULT_MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats',
  '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN" all name the same capability. */
export function normalizeCapability(name: string): string {
  const upper = name.toUpperCase();
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (full !== 'CAP_ALL' && !ALL_CAPABILITIES.includes(full)) throw invalidArgument(`unknown capability "${name}"`, { capability: name });
  return full;
}

/** Default set, plus adds, minus drops; "ALL" in add or drop means every capability. Drops win. */
export function effectiveCapabilities(add: string[], drop: string[], privileged: boolean): string[] {
  if (privileged) return [...ALL_CAPABILITIES];
  const adds = add.map(normalizeCapability);
  const drops = drop.map(normalizeCapability);
  let caps = new Set(adds.includes('CAP_ALL') ? ALL_CAPABILITIES : [...DEFAULT_CAPABILITIES, ...adds]);
  if (drops.includes('CAP_ALL')) caps = new Set(adds.filter((c) => c !== 'CAP_ALL'));
  for (const d of drops) caps.delete(d);
  return ALL_CAPABILITIES.filter((c) => caps.has(c));
}

export function withSecurity(spec: OciSpec, input: SpecInput): OciSpec {
  const sc = input.config.linux?.security_context;
  const privileged = sc?.privileged ?? false;
  const caps = effectiveCapabilities(sc?.capabilities?.add_capabilities ?? [], sc?.capabilities?.drop_capabilities ?? [], privileged);
  const ambient = (sc?.capabilities?.add_ambient_capabilities ?? []).map(normalizeCapability).filter((c) => caps.includes(c));
  // A non-root user keeps no effective capabilities unless asked for ambient ones (kubelet's semantics).
  const rootUser = input.user.uid === 0;
  const process = {
    ...spec.process,
    capabilities: {
      bounding: caps,
      permitted: rootUser ? caps : ambient,
      effective: rootUser ? caps : ambient,
      inheritable: rootUser ? [] : ambient,
      ambient,
    },
    noNewPrivileges: sc?.no_new_privs ?? false,
  };
  const linux = { ...spec.linux };
  if (privileged) {
    delete linux.maskedPaths;
    delete linux.readonlyPaths;
    delete linux.seccomp;
  } else {
    linux.maskedPaths = sc?.masked_paths.length ? [...sc.masked_paths] : DEFAULT_MASKED_PATHS;
    linux.readonlyPaths = sc?.readonly_paths.length ? [...sc.readonly_paths] : DEFAULT_READONLY_PATHS;
    if (input.seccomp === 'runtime-default') linux.seccomp = runtimeDefaultSeccomp(caps);
    else if (input.seccomp) linux.seccomp = input.seccomp;
    else delete linux.seccomp;
  }
  // Privileged containers see the host's /sys read-write, like docker and containerd.
  const mounts = privileged
    ? spec.mounts.map((m) => (m.destination === '/sys' || m.destination === '/sys/fs/cgroup' ? { ...m, options: (m.options ?? []).filter((o) => o !== 'ro') } : m))
    : spec.mounts;
  if (input.apparmorEnabled && !privileged) {
    const profile = apparmorProfile(input);
    if (profile) process.apparmorProfile = profile;
  }
  return { ...spec, process, linux, mounts };
}

/** AppArmor profile name: Localhost names its profile; RuntimeDefault uses the distribution's default. */
function apparmorProfile(input: SpecInput): string | undefined {
  const sc = input.config.linux?.security_context;
  const p = sc?.apparmor;
  if (p?.profile_type === 'Localhost') return p.localhost_ref.replace(/^localhost\//, '');
  if (p?.profile_type === 'Unconfined') return undefined;
  if (sc?.apparmor_profile?.startsWith('localhost/')) return sc.apparmor_profile.slice('localhost/'.length);
  if (sc?.apparmor_profile === 'unconfined') return undefined;
  return undefined; // RuntimeDefault: no profile of our own is installed, leave the kernel default
}
