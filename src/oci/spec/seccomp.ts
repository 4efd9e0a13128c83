// seccomp: which profile a container gets, and skiff's RuntimeDefault profile.
import type { LinuxContainerSecurityContext__Output } from '../../gen/runtime/v1/LinuxContainerSecurityContext.js';
import type { OciSeccomp, OciSeccompSyscall } from './types.js';

export type SeccompChoice = { kind: 'unconfined' } | { kind: 'runtime-default' } | { kind: 'localhost'; path: string };

/** Reads the 1.29 `seccomp` field, falling back to the deprecated `seccomp_profile_path` string. */
export function seccompChoice(sc: LinuxContainerSecurityContext__Output | null | undefined): SeccompChoice {
  if (sc?.privileged) return { kind: 'unconfined' };
  const p = sc?.seccomp;
  if (p) {
    if (p.profile_type === 'RuntimeDefault') return { kind: 'runtime-default' };
    if (p.profile_type === 'Localhost') return { kind: 'localhost', path: p.localhost_ref };
    return { kind: 'unconfined' };
  }
  const legacy = sc?.seccomp_profile_path ?? '';
  if (legacy === 'runtime/default' || legacy === 'docker/default') return { kind: 'runtime-default' };
  if (legacy.startsWith('localhost/')) return { kind: 'localhost', path: legacy.slice('localhost/'.length) };
  return { kind: 'unconfined' };
}

/** Syscalls RuntimeDefault refuses whatever the capabilities: they reach state no namespace isolates. */
const ALWAYS_DENIED = [
  'add_key', 'create_module', 'get_kernel_syms', 'io_uring_enter', 'io_uring_register', 'io_uring_setup', 'keyctl',
  'nfsservctl', 'query_module', 'request_key', 'sysfs', '_sysctl', 'uselib', 'userfaultfd', 'ustat', 'vm86', 'vm86old',
];

/**
 * Syscalls allowed only to a container whose capability set holds one of the listed capabilities (the
 * kernel would refuse most of them anyway without it; seccomp keeps their attack surface out of reach).
 */
const CAP_GATED: readonly { caps: string[]; names: string[] }[] = [
  {
    caps: ['CAP_SYS_ADMIN'],
    names: [
      'fsconfig', 'fsmount', 'fsopen', 'fspick', 'lookup_dcookie', 'mount', 'mount_setattr', 'move_mount', 'name_to_handle_at',
      'open_tree', 'pivot_root', 'quotactl', 'quotactl_fd', 'setdomainname', 'sethostname', 'setns', 'swapoff', 'swapon',
      'umount', 'umount2', 'unshare', 'fanotify_init',
    ],
  },
  { caps: ['CAP_SYS_ADMIN', 'CAP_BPF'], names: ['bpf'] },
  { caps: ['CAP_SYS_ADMIN', 'CAP_PERFMON'], names: ['perf_event_open'] },
  { caps: ['CAP_SYS_PTRACE'], names: ['kcmp', 'pidfd_getfd', 'process_vm_readv', 'process_vm_writev', 'ptrace'] },
  { caps: ['CAP_SYS_MODULE'], names: ['delete_module', 'finit_module', 'init_module'] },
  { caps: ['CAP_SYS_BOOT'], names: ['kexec_file_load', 'kexec_load', 'reboot'] },
  { caps: ['CAP_SYS_TIME'], names: ['adjtimex', 'clock_adjtime', 'clock_settime', 'settimeofday', 'stime'] },
  { caps: ['CAP_SYS_PACCT'], names: ['acct'] },
  { caps: ['CAP_SYS_RAWIO'], names: ['ioperm', 'iopl'] },
  { caps: ['CAP_SYS_NICE'], names: ['get_mempolicy', 'mbind', 'move_pages', 'set_mempolicy'] },
  { caps: ['CAP_DAC_READ_SEARCH'], names: ['open_by_handle_at'] },
  { caps: ['CAP_SYSLOG'], names: ['syslog'] },
  { caps: ['CAP_SYS_TTY_CONFIG'], names: ['vhangup'] },
];

/** clone(2) flags that make a namespace (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET). */
export const CLONE_NAMESPACE_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];
/** personality(2) bits that weaken the process (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC). */
const PERSONALITY_WEAKENING = [0x0040000, 0x0400000];
const EPERM = 1;
const ENOSYS = 38;

/**
 * RuntimeDefault, given the container's capability set. It keeps a deny list (default allow, so new
 * harmless syscalls work) but covers what docker/containerd's default profile keeps out:
 * - always: keyrings, io_uring (a large, often-exploited kernel surface), obsolete and kernel-global calls;
 * - unless CAP_SYS_ADMIN: new namespaces (unshare, setns; clone with a CLONE_NEW* flag, matched on the
 *   flags argument so fork and threads are unaffected; clone3, whose flags sit in memory seccomp cannot
 *   read, answers ENOSYS so libcs fall back to clone), mounts, and disabling ASLR through personality;
 * - the other cap-gated calls (ptrace-class with CAP_SYS_PTRACE, modules, clock, reboot, …) only when
 *   the container holds the capability, so granting it is not silently undone by seccomp.
 * All refusals are EPERM except clone3's ENOSYS.
 */
export function runtimeDefaultSeccomp(caps: readonly string[]): OciSeccomp {
  const has = new Set(caps);
  const denied = [...ALWAYS_DENIED];
  for (const g of CAP_GATED) if (!g.caps.some((c) => has.has(c))) denied.push(...g.names);
  const syscalls: OciSeccompSyscall[] = [{ names: denied.sort(), action: 'SCMP_ACT_ERRNO', errnoRet: EPERM }];
  if (!has.has('CAP_SYS_ADMIN')) {
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
    // one rule per flag: (flags & F) == F; the rules of one syscall are alternatives
    for (const f of CLONE_NAMESPACE_FLAGS) {
      syscalls.push({ names: ['clone'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [{ index: 0, value: f, valueTwo: f, op: 'SCMP_CMP_MASKED_EQ' }] });
    }
    for (const bit of PERSONALITY_WEAKENING) {
      syscalls.push({ names: ['personality'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [{ index: 0, value: bit, valueTwo: bit, op: 'SCMP_CMP_MASKED_EQ' }] });
    }
  }
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
    syscalls,
  };
}
