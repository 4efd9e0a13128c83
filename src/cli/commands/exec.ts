// `exec`: run a command in a running container. Non-interactive runs use ExecSync (the command's output
// comes back whole, its exit code becomes ours); -i / -t use the streaming Exec rpc and speak SPDY/3.1 to
// the runtime's streaming server (src/stream/client.ts), with the local terminal raw while it runs.
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { runtimeCall } from '../client.js';
import { intOption } from '../filters.js';
import { runRemoteCommand } from '../../stream/client.js';
import { withTerminal } from '../terminal.js';

interface ExecOpts {
  sync?: boolean;
  timeout: number;
  interactive?: boolean;
  tty?: boolean;
}

/** Extra time the rpc gets beyond the exec's own timeout, for the runtime to kill and report. */
const RPC_SLACK_MS = 10_000;

export function registerExec(program: Command, cli: CliContext): void {
  program
    .command('exec')
    .description('Run a command in a running container (exits with its exit code)')
    .argument('<container-id>')
    .argument('<command...>', 'command and arguments (options after the container ID are passed to the command)')
    .option('-s, --sync', 'run through ExecSync: output returned when the command ends')
    .option('--timeout <seconds>', 'kill the command after this many seconds (0 = no limit)', intOption('--timeout'), 0)
    .option('-i, --interactive', 'keep stdin open (streaming exec)')
    .option('-t, --tty', 'allocate a terminal (streaming exec)')
    .passThroughOptions()
    .action(async (id: string, cmd: string[], opts: ExecOpts) => {
      if ((opts.interactive || opts.tty) && !opts.sync) {
        const tty = opts.tty ?? false;
        const stdin = opts.interactive ?? false;
        const { url } = await runtimeCall(cli.client(), 'Exec', { container_id: id, cmd, tty, stdin, stdout: true, stderr: !tty });
        cli.exitCode = await withTerminal({ stdin, tty }, (io) => runRemoteCommand(url, io));
        return;
      }
      // Without -i/-t there is nothing to stream in, so ExecSync gives the same result as crictl's stream.
      const deadline = opts.timeout > 0 ? opts.timeout * 1000 + RPC_SLACK_MS : 0;
      const res = await runtimeCall(cli.client(), 'ExecSync', { container_id: id, cmd, timeout: opts.timeout }, deadline);
      process.stdout.write(res.stdout);
      process.stderr.write(res.stderr);
      cli.exitCode = res.exit_code;
    });
}
