// Builds the streaming server's backends from the daemon's subsystems: port-forward dials into the pod's
// network namespace (src/net/netns-dialer.ts); exec and attach go to the container manager, which runs
// them through the runtime driver (src/oci).
import { join } from 'node:path';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { DaemonContext } from './context.js';
import { failedPrecondition } from '../errors.js';
import { NetnsDialer } from '../net/netns-dialer.js';
import { StreamingServer } from '../stream/server.js';
import type { StreamingBackends } from '../stream/backend.js';

/** Starts the streaming server; the returned close() stops it and every port-forward relay. */
export async function startStreaming(
  config: SkiffConfig,
  log: Logger,
  ctx: () => DaemonContext,
): Promise<{ server: StreamingServer; close: () => Promise<void> }> {
  // Short: relay sockets live here and unix socket paths are limited to 107 bytes.
  const dialer = new NetnsDialer(join(config.state, 'pf'), log.child({ part: 'port-forward' }));
  const backends: StreamingBackends = {
    exec: {
      exec: (req, io) => ctx().containers.execStreaming(req.containerId, req.cmd, req.tty, io),
    },
    attach: {
      attach: (req, io) => ctx().containers.attach(req.containerId, io),
    },
    portForward: {
      dial: (podId, port, signal) => {
        const pod = ctx().pods.get(podId);
        if (pod.state !== 'ready') throw failedPrecondition(`pod sandbox ${pod.id} is not ready`, { pod: pod.id });
        return dialer.dial(pod.namespaces.net, port, signal);
      },
    },
  };
  const server = new StreamingServer(config.streaming, backends, log.child({ part: 'streaming' }));
  await server.start();
  return {
    server,
    close: async () => {
      dialer.close();
      await server.close();
    },
  };
}
