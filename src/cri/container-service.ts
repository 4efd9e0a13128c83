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

export function containerService(ctx: DaemonContext): Partial<CriHandlers> {
  const containers = ctx.containers;
  return {
    runtime: {
      CreateContainer: unary(async (req) => {
        if (req.pod_sandbox_id === '') throw invalidArgument('pod_sandbox_id is required');
        if (!req.config) throw invalidArgument('config is required');
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
        const abort = new AbortController();
        call.once('cancelled', () => abort.abort());
        const res = await containers.execSync(requireId(req.container_id), req.cmd, seconds(req.timeout, 'timeout'), abort.signal);
        return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
      }),
    },
  };
}
