// version, info, runtime-config: crictl's verbs for what the runtime is.
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { runtimeCall } from '../client.js';
import { outputOption } from '../context.js';
import type { OutputFormat } from '../output.js';

export function registerRuntimeInfo(program: Command, cli: CliContext): void {
  program
    .command('version')
    .description('Display runtime version information')
    .option(...outputOption())
    .action(async (opts: { output: OutputFormat }) => {
      const v = await runtimeCall(cli.client(), 'Version', { version: 'v1' });
      cli.output(opts.output, v, () =>
        [`Version:  ${v.version}`, `RuntimeName:  ${v.runtime_name}`, `RuntimeVersion:  ${v.runtime_version}`, `RuntimeApiVersion:  ${v.runtime_api_version}`].join('\n'),
      );
    });

  program
    .command('info')
    .description('Display information of the container runtime')
    .option(...outputOption('json'))
    .action(async (opts: { output: OutputFormat }) => {
      const res = await runtimeCall(cli.client(), 'Status', { verbose: true });
      // crictl prints the status plus each verbose info value parsed as JSON where it is JSON.
      const info: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(res.info)) {
        try {
          info[k] = JSON.parse(v);
        } catch {
          info[k] = v;
        }
      }
      const value = { status: res.status, ...info };
      cli.output(opts.output, value, () =>
        (res.status?.conditions ?? []).map((c) => `${c.type}: ${c.status}${c.reason ? ` (${c.reason}: ${c.message})` : ''}`).join('\n'),
      );
    });

  program
    .command('runtime-config')
    .description('Retrieve the container runtime configuration')
    .option(...outputOption())
    .action(async (opts: { output: OutputFormat }) => {
      const res = await runtimeCall(cli.client(), 'RuntimeConfig', {});
      cli.output(opts.output, res, () => `cgroup driver: ${res.linux?.cgroup_driver ?? 'unknown'}`);
    });
}
