// Exec, Attach, PortForward: validate the request, check the target can be streamed to, and return a
// single-use URL on the streaming server (src/stream). The streams themselves never touch gRPC.
import type { DaemonContext } from '../daemon/context.js';
import type { CriHandlers } from './server.js';
import { unary } from './server.js';
import { failedPrecondition, invalidArgument } from '../errors.js';
import type { PortForwardRequest__Output } from '../gen/runtime/v1/PortForwardRequest.js';
import type { PortForwardResponse } from '../gen/runtime/v1/PortForwardResponse.js';

export function streamService(ctx: DaemonContext): Partial<CriHandlers> {
  return {
    runtime: {
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
