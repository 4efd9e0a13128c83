// The `skiff` binary: `skiff daemon` serves CRI; every other verb is a CRI client named like crictl's.
import { Command, CommanderError } from 'commander';
import { status as grpcStatus } from '@grpc/grpc-js';
import { CliContext } from './context.js';
import { registerDaemon } from './commands/daemon.js';
import { registerRuntimeInfo } from './commands/runtime-info.js';
import { registerImages } from './commands/images.js';
import { registerStats } from './commands/stats.js';
import { registerStreaming } from './commands/stream.js';
import { SKIFF_VERSION } from '../version.js';
import { errorMessage } from '../errors.js';

function describeError(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && 'details' in err && typeof (err as { code: unknown }).code === 'number') {
    const { code, details } = err as { code: number; details: string };
    return `rpc error: code = ${grpcStatus[code] ?? code} desc = ${details}`;
  }
  return errorMessage(err);
}

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
    .showHelpAfterError()
    .exitOverride();

  registerDaemon(program);
  registerRuntimeInfo(program, cli);
  registerImages(program, cli);
  registerStats(program, cli);
  registerStreaming(program, cli);

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`skiff: ${describeError(err)}\n`);
    return 1;
  } finally {
    cli.close();
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
