// seccomp: which profile a container gets, and skiff's RuntimeDefault profile.
import type { LinuxContainerSecurityContext__Output } from '../../gen/runtime/v1/LinuxContainerSecurityContext.js';
import type { OciSeccomp } from './types.js';

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

/**
 * RuntimeDefault: allow everything except the syscalls that reach past the container (kernel modules,
 * kexec, keyrings, BPF, clock setting, swap, reboot, namespaces and mounts without CAP_SYS_ADMIN, …),
 * which fail with EPERM. A deny list keeps new syscalls working; the dangerous set is the one
 * docker/containerd's allow list leaves out.
 */
export function runtimeDefaultSeccomp(): OciSeccomp {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
    syscalls: [
      {
        names: [
          'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module', 'finit_module',
          'get_kernel_syms', 'get_mempolicy', 'init_module', 'ioperm', 'iopl', 'kcmp', 'kexec_file_load', 'kexec_load',
          'keyctl', 'lookup_dcookie', 'mbind', 'move_pages', 'name_to_handle_at', 'nfsservctl', 'open_by_handle_at',
          'perf_event_open', 'personality', 'pivot_root', 'process_vm_readv', 'process_vm_writev', 'ptrace', 'query_module',
          'quotactl', 'reboot', 'request_key', 'set_mempolicy', 'setns', 'settimeofday', 'stime', 'swapoff', 'swapon',
          'sysfs', '_sysctl', 'umount', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'ustat', 'vm86', 'vm86old', 'mount',
          'fsopen', 'fsmount', 'fsconfig', 'fspick', 'open_tree', 'move_mount',
        ],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: 1,
      },
    ],
  };
}
