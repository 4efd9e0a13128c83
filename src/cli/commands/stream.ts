// attach, port-forward: crictl's streaming verbs (exec -i/-t is in exec.ts). The rpc returns a URL on the runtime's streaming
// server; we then speak SPDY/3.1 to it (src/stream/client.ts), as crictl and kubectl do.
import type { Command } from 'commander';
import { createServer, type Server, type Socket } from 'node:net';
import type { CliContext } from '../context.js';
import { runtimeCall } from '../client.js';
import { runRemoteCommand, PortForwardSession } from '../../stream/client.js';
import { errorMessage } from '../../errors.js';
import { withTerminal } from '../terminal.js';

interface AttachOpts {
  interactive?: boolean;
  tty?: boolean;
}

export function registerStreaming(program: Command, cli: CliContext): void {
  program
    .command('attach')
    .description('Attach to a running container (detaching leaves it running)')
    .argument('<container-id>', 'container ID (or unique prefix)')
    .option('-i, --interactive', 'send stdin to the container')
    .option('-t, --tty', 'the container has a terminal (as it was created with tty: true)')
    .action(async (id: string, opts: AttachOpts) => {
      const tty = opts.tty ?? false;
      const stdin = opts.interactive ?? false;
      const { url } = await runtimeCall(cli.client(), 'Attach', { container_id: id, tty, stdin, stdout: true, stderr: !tty });
      await withTerminal({ stdin, tty }, (io) => runRemoteCommand(url, io));
    });

  program
    .command('port-forward')
    .description('Forward local ports to a pod')
    .argument('<pod-id>', 'pod sandbox ID (or unique prefix)')
    .argument('<ports...>', '[LOCAL_PORT:]REMOTE_PORT (LOCAL_PORT 0 or omitted before ":" = any free port)')
    .option('--address <address>', 'local address to listen on', '127.0.0.1')
    .action(async (podId: string, specs: string[], opts: { address: string }) => {
      const pairs = specs.map(parsePortSpec);
      const { url } = await runtimeCall(cli.client(), 'PortForward', { pod_sandbox_id: podId, port: pairs.map((p) => p.remote) });
      const session = await PortForwardSession.open(url);
      const servers: Server[] = [];
      try {
        for (const { local, remote } of pairs) {
          // Half-open: a client's EOF must not cut the pod's answer still on its way back.
          const server = createServer({ allowHalfOpen: true }, (sock: Socket) => {
            sock.on('error', () => undefined);
            session.forward(sock, remote).catch((err: unknown) => {
              process.stderr.write(`port-forward: ${errorMessage(err)}\n`);
              sock.destroy();
            });
          });
          servers.push(server);
          await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen(local, opts.address, () => resolve());
          });
          const addr = server.address();
          const port = typeof addr === 'object' && addr ? addr.port : local;
          process.stdout.write(`Forwarding from ${opts.address}:${port} -> ${remote}\n`);
        }
        // Until interrupted, or until the runtime drops the session.
        await new Promise<void>((resolve) => {
          const stop = (): void => resolve();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          session.conn.once('close', () => {
            process.stderr.write('port-forward: the streaming connection was closed\n');
            resolve();
          });
        });
      } finally {
        for (const s of servers) s.close();
        session.close();
      }
    });
}

/** "8080", "9000:80", ":80", "0:80" -> local and remote port (local 0 = any). */
export function parsePortSpec(spec: string): { local: number; remote: number } {
  const m = /^(?:(\d*):)?(\d+)$/.exec(spec);
  const check = (n: number): number => {
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`invalid port in "${spec}"`);
    return n;
  };
  if (!m) throw new Error(`invalid port specification "${spec}": use [LOCAL_PORT:]REMOTE_PORT`);
  const remote = check(Number(m[2]));
  if (remote === 0) throw new Error(`invalid port specification "${spec}": the remote port cannot be 0`);
  const local = m[1] === undefined ? remote : m[1] === '' ? 0 : check(Number(m[1]));
  return { local, remote };
}
