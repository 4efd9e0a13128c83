// Exec, Attach, PortForward: validate the request, check the target can be streamed to, and return a
// single-use URL on the streaming server (src/stream). The streams themselves never touch gRPC.
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary } from './server.js';
import { failedPrecondition, invalidArgument } from '../errors.js';
import type { ContainerRecord } from '../store/records.js';
import type { ExecRequest__Output } from '../gen/runtime/v1/ExecRequest.js';
import type { ExecResponse } from '../gen/runtime/v1/ExecResponse.js';
import type { AttachRequest__Output } from '../gen/runtime/v1/AttachRequest.js';
import type { AttachResponse } from '../gen/runtime/v1/AttachResponse.js';
import type { PortForwardRequest__Output } from '../gen/runtime/v1/PortForwardRequest.js';
import type { PortForwardResponse } from '../gen/runtime/v1/PortForwardResponse.js';

interface Stdio {
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** The same rules as kubelet's streaming server: some stream requested; a tty merges stderr into it. */
function checkStdio(req: Stdio, container: string): void {
  if (!req.stdin && !req.stdout && !req.stderr) throw invalidArgument('one of stdin, stdout or stderr must be set', { container });
  if (req.tty && req.stderr) throw invalidArgument('tty and stderr cannot both be set: a terminal merges stderr into stdout', { container });
}

function runningContainer(ctx: DaemonContext, id: string): ContainerRecord {
  if (id === '') throw invalidArgument('container_id is required');
  const c = ctx.containers.get(id);
  if (c.state !== 'running') {
    throw failedPrecondition(`container ${c.id} is not running (state: ${c.state}); exec and attach need a running container`, { container: c.id });
  }
  return c;
}

export function streamService(ctx: DaemonContext): Partial<CriHandlers> {
  return {
    runtime: {
      Exec: unary(async (req: ExecRequest__Output): Promise<ExecResponse> => {
        if (req.cmd.length === 0 || req.cmd[0] === '') throw invalidArgument('cmd is required', { container: req.container_id });
        checkStdio(req, req.container_id);
        const c = runningContainer(ctx, req.container_id);
        const { tty, stdin, stdout, stderr } = req;
        return Promise.resolve({ url: ctx.streaming.execUrl({ containerId: c.id, cmd: [...req.cmd], tty, stdin, stdout, stderr }) });
      }),
      Attach: unary(async (req: AttachRequest__Output): Promise<AttachResponse> => {
        checkStdio(req, req.container_id);
        const c = runningContainer(ctx, req.container_id);
        if (req.stdin && !c.config.stdin) {
          throw invalidArgument(`container ${c.id} was created without stdin: attach with stdin needs stdin: true in its config`, { container: c.id });
        }
        // The container's terminal decides how its output comes (with a tty, no separate stderr): the
        // client must expect the same, or it would wait for streams that never come.
        if (req.tty !== c.config.tty) {
          throw invalidArgument(
            c.config.tty ? `container ${c.id} has a terminal: attach with tty (-t)` : `container ${c.id} has no terminal: attach without tty (-t)`,
            { container: c.id },
          );
        }
        const { tty, stdin, stdout, stderr } = req;
        return Promise.resolve({ url: ctx.streaming.attachUrl({ containerId: c.id, tty, stdin, stdout, stderr }) });
      }),
      PortForward: unary(async (req: PortForwardRequest__Output): Promise<PortForwardResponse> => {
        if (req.pod_sandbox_id === '') throw invalidArgument('pod_sandbox_id is required');
        for (const port of req.port) {
          if (!Number.isInteger(port) || port < 1 || port > 65535) {
            throw invalidArgument(`port ${port} is out of range (1-65535)`, { pod: req.pod_sandbox_id });
          }
        }
        const pod = ctx.pods.get(req.pod_sandbox_id);
        if (pod.state !== 'ready') throw failedPrecondition(`pod sandbox ${pod.id} is not ready`, { pod: pod.id });
        return Promise.resolve({ url: ctx.streaming.portForwardUrl({ podSandboxId: pod.id, ports: [...req.port] }) });
      }),
    },
  };
}
