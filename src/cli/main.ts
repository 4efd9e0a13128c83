// The `skiff` binary: `skiff daemon` serves CRI; every other verb is a CRI client named like crictl's.
import { Command, CommanderError } from 'commander';
import { CliContext } from './context.js';
import { registerDaemon } from './commands/daemon.js';
import { registerRuntimeInfo } from './commands/runtime-info.js';
import { registerImages } from './commands/images.js';
import { registerStats } from './commands/stats.js';
import { registerPods } from './commands/pods.js';
import { registerContainers } from './commands/containers.js';
import { registerLogs } from './commands/logs.js';
import { registerExec } from './commands/exec.js';
import { registerStreaming } from './commands/stream.js';
import { SKIFF_VERSION } from '../version.js';
import { describeError } from './output.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('skiff');
  const cli = new CliContext(program);
  program
    .description('skiff: a Kubernetes CRI runtime (daemon) and a crictl-compatible client')
    .version(SKIFF_VERSION, '-v, --version')
    .option('-r, --runtime-endpoint <endpoint>', 'CRI endpoint (env CONTAINER_RUNTIME_ENDPOINT)')
    .option('-i, --image-endpoint <endpoint>', 'image service endpoint (defaults to the runtime endpoint)')
    .option('-t, --timeout <duration>', 'timeout of each call (e.g. 2s, 1m; 0 = none)', '10s')
    .option('-D, --debug', 'debug output')
    // global options go before the verb (as crictl's): `stop -t 5` is the verb's timeout, not the call's
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();

  registerDaemon(program);
  registerRuntimeInfo(program, cli);
  registerImages(program, cli);
  registerStats(program, cli);
  registerPods(program, cli);
  registerContainers(program, cli);
  registerLogs(program, cli);
  registerExec(program, cli);
  registerStreaming(program, cli);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return cli.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`skiff: ${describeError(err)}\n`);
    return 1;
  } finally {
    cli.close();
  }
}

// `skiff logs -f ID | head`: a reader that goes away ends us quietly instead of with a stack trace
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(0);
  });
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
