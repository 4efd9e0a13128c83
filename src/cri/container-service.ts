// CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus, ListContainers,
// UpdateContainerResources, ReopenContainerLog, ExecSync: validate and translate only; the mechanics
// live in src/containers (ctx.containers) and src/oci.
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary } from './server.js';
import { invalidArgument } from '../errors.js';
import { criContainer } from '../containers/status.js';

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

export function containerService(ctx: DaemonContext): Partial<CriHandlers> {
  const containers = ctx.containers;
  return {
    runtime: {
      CreateContainer: unary(async (req) => {
        if (req.pod_sandbox_id === '') throw invalidArgument('pod_sandbox_id is required');
        if (!req.config) throw invalidArgument('config is required');
        checkExecStrings(req.config);
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
        const abort = new AbortController();
        call.once('cancelled', () => abort.abort());
        const res = await containers.execSync(requireId(req.container_id), req.cmd, seconds(req.timeout, 'timeout'), abort.signal);
        return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
      }),
    },
  };
}
