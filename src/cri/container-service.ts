// CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus, ListContainers,
// UpdateContainerResources, ReopenContainerLog, ExecSync: validate and translate only; the mechanics
// live in src/containers (ctx.containers) and src/oci.
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary, cancelSignal } from './server.js';
import { invalidArgument } from '../errors.js';
import { criContainer } from '../containers/status.js';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources.js';

function requireId(id: string): string {
  if (id === '') throw invalidArgument('container_id is required');
  return id;
}

/** int64 seconds on the wire (a decimal string); negative is refused. */
function seconds(v: string, what: string): number {
  const n = Number(v || '0');
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument(`${what} must be a non-negative number of seconds, got "${v}"`);
  return n;
}

/** Linux's MAX_ARG_STRLEN: execve refuses any one argument or environment string longer (with its NUL). */
const MAX_ARG_BYTES = 32 * 4096;

/** Linux's PATH_MAX: no executable path can be longer (with its NUL). */
const MAX_PATH_BYTES = 4096;

/**
 * A command that can never exec is refused here: runc deadlocks (never fails) when the "executable not
 * found" error it reports is bigger than a pipe buffer, i.e. for an executable name of ~64 KiB.
 */
function checkExecStrings(config: { command: string[]; args: string[]; envs: { key: string; value: string }[] }): void {
  const exe = config.command[0] ?? config.args[0] ?? '';
  if (Buffer.byteLength(exe) + 1 > MAX_PATH_BYTES) throw invalidArgument(`executable path of ${Buffer.byteLength(exe)} bytes exceeds PATH_MAX (${MAX_PATH_BYTES - 1})`);
  const strings = [...config.command, ...config.args, ...config.envs.map((e) => `${e.key}=${e.value}`)];
  for (const s of strings) {
    if (Buffer.byteLength(s) + 1 > MAX_ARG_BYTES) {
      throw invalidArgument(`a command, argument or environment string of ${Buffer.byteLength(s)} bytes exceeds the kernel's ${MAX_ARG_BYTES - 1}-byte limit per string`);
    }
  }
}

const CPUSET = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

/**
 * Resource numbers travel to the runtime as JSON: beyond 2^53 they silently change value (runc then
 * refuses the spec, which surfaced as INTERNAL). cpusets and unified keys are checked for shape here too.
 */
function checkResources(r: LinuxContainerResources__Output | null | undefined): void {
  if (!r) return;
  for (const k of ['cpu_period', 'cpu_quota', 'cpu_shares', 'memory_limit_in_bytes', 'oom_score_adj', 'memory_swap_limit_in_bytes'] as const) {
    if (!Number.isSafeInteger(Number(r[k] || '0'))) throw invalidArgument(`resources.${k} ${r[k]} is out of range`);
  }
  for (const k of ['cpuset_cpus', 'cpuset_mems'] as const) {
    if (r[k] !== '' && !CPUSET.test(r[k])) throw invalidArgument(`resources.${k} "${r[k].slice(0, 100)}" is not a cpu list such as 0-3,6`);
  }
  for (const key of Object.keys(r.unified)) {
    if (key === '' || key.includes('/') || key.startsWith('.')) throw invalidArgument(`resources.unified key "${key.slice(0, 100)}" is not a cgroup file name`);
  }
}

export function containerService(ctx: DaemonContext): Partial<CriHandlers> {
  const containers = ctx.containers;
  return {
    runtime: {
      CreateContainer: unary(async (req) => {
        if (req.pod_sandbox_id === '') throw invalidArgument('pod_sandbox_id is required');
        if (!req.config) throw invalidArgument('config is required');
        checkExecStrings(req.config);
        checkResources(req.config.linux?.resources);
        const c = await containers.create({ podId: req.pod_sandbox_id, config: req.config });
        return { container_id: c.id };
      }),
      StartContainer: unary(async (req) => {
        await containers.start(requireId(req.container_id));
        return {};
      }),
      StopContainer: unary(async (req) => {
        await containers.stop(requireId(req.container_id), seconds(req.timeout, 'timeout'));
        return {};
      }),
      RemoveContainer: unary(async (req) => {
        await containers.remove(requireId(req.container_id));
        return {};
      }),
      ContainerStatus: unary(async (req) => containers.status(requireId(req.container_id), req.verbose)),
      ListContainers: unary(async (req) => {
        const f = req.filter;
        const items = containers.list({
          id: f?.id || undefined,
          podId: f?.pod_sandbox_id || undefined,
          state: f?.state?.state,
          labels: f?.label_selector,
        });
        return { containers: items.map(criContainer) };
      }),
      UpdateContainerResources: unary(async (req) => {
        checkResources(req.linux);
        await containers.updateResources(requireId(req.container_id), req.linux);
        return {};
      }),
      ReopenContainerLog: unary(async (req) => {
        await containers.reopenLog(requireId(req.container_id));
        return {};
      }),
      ExecSync: unary(async (req, call) => {
        if (req.cmd.length === 0) throw invalidArgument('cmd is required');
        checkExecStrings({ command: req.cmd, args: [], envs: [] });
        const res = await containers.execSync(requireId(req.container_id), req.cmd, seconds(req.timeout, 'timeout'), cancelSignal(call));
        return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
      }),
    },
  };
}
