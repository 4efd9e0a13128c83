// A streaming backend that runs commands on the host instead of in a container: for tests about the
// streaming protocols alone (the container side has its own tests against real runc/conmon).
import { connect, type Socket } from 'node:net';
import type { StreamingBackends } from '../../src/stream/backend.js';
import { runProcessWithIo } from '../../src/oci/process-io.js';

export function hostBackends(): StreamingBackends {
  return {
    exec: {
      exec: (req, io) => runProcessWithIo(req.cmd[0], req.cmd.slice(1), io, { tty: req.tty }),
    },
    attach: {
      attach: async () => {
        throw new Error('attach is not available on the host-process backend');
      },
    },
    portForward: {
      // "pod" = the host's loopback.
      dial: (_pod, port) =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect(port, '127.0.0.1');
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
    },
  };
}
