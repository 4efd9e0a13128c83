// stats, statsp, events: crictl's verbs for container/pod resource usage and the container event stream.
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { outputOption } from '../context.js';
import { runtimeCall } from '../client.js';
import { collect, labelSelector } from '../filters.js';
import { formatTable, formatStructured, type OutputFormat } from '../output.js';
import type { ContainerStats__Output } from '../../gen/runtime/v1/ContainerStats.js';
import type { PodSandboxStats__Output } from '../../gen/runtime/v1/PodSandboxStats.js';
import type { ContainerEventResponse__Output } from '../../gen/runtime/v1/ContainerEventResponse.js';
import type { CpuUsage__Output } from '../../gen/runtime/v1/CpuUsage.js';


/** Human byte sizes as crictl prints them (B, kB, MB, GB; decimal). */
export function humanBytes(v: string | number | undefined): string {
  let n = Number(v ?? 0);
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let u = 0;
  while (n >= 1000 && u < units.length - 1) {
    n /= 1000;
    u++;
  }
  return u === 0 ? `${n}B` : `${n.toFixed(n < 10 ? 3 : n < 100 ? 2 : 1).replace(/\.?0+$/, '')}${units[u]}`;
}

/**
 * CPU % of one core: usage_nano_cores when the runtime has a window, else the core-seconds difference
 * between two samples taken `seconds` apart (as crictl does).
 */
function cpuPercent(now: CpuUsage__Output | null, before: CpuUsage__Output | null | undefined): string {
  if (!now) return '0.00';
  if (before?.usage_core_nano_seconds && now.usage_core_nano_seconds) {
    const dUsage = Number(BigInt(now.usage_core_nano_seconds.value) - BigInt(before.usage_core_nano_seconds.value));
    const dTime = Number(BigInt(now.timestamp) - BigInt(before.timestamp));
    if (dTime > 0) return ((dUsage / dTime) * 100).toFixed(2);
  }
  if (now.usage_nano_cores) return (Number(now.usage_nano_cores.value) / 1e7).toFixed(2);
  return '0.00';
}

/** Two samples `windowMs` apart (one when 0), for CPU % from the usage difference. */
async function sampleTwice<T>(fetch: () => Promise<T>, windowMs: number): Promise<[T, T]> {
  const first = await fetch();
  if (windowMs <= 0) return [first, first];
  await new Promise((r) => setTimeout(r, windowMs));
  return [first, await fetch()];
}

interface StatsOpts {
  output: OutputFormat;
  id?: string;
  pod?: string;
  label: string[];
  seconds: string;
  watch?: boolean;
  all?: boolean;
}

export function registerStats(program: Command, cli: CliContext): void {
  program
    .command('stats [ID]')
    .description('List container(s) resource usage statistics')
    .option(...outputOption())
    .option('--id <id>', 'filter by container ID')
    .option('-p, --pod <id>', 'filter by pod ID')
    .option('--label <key=value>', 'filter by label (repeatable)', collect, [])
    .option('-s, --seconds <n>', 'sample window for CPU % in the table', '1')
    .option('-w, --watch', 'keep printing every --seconds')
    .option('-a, --all', 'accepted for crictl compatibility (stats exist for running containers)')
    .action(async (idArg: string | undefined, opts: StatsOpts) => {
      const filter = { id: idArg ?? opts.id ?? '', pod_sandbox_id: opts.pod ?? '', label_selector: labelSelector(opts.label) };
      const windowMs = Math.max(0, Number(opts.seconds) * 1000);
      do {
        const [first, res] = await sampleTwice(() => runtimeCall(cli.client(), 'ListContainerStats', { filter }), opts.output === 'table' ? windowMs : 0);
        const before = new Map(first.stats.map((s) => [s.attributes?.id, s.cpu]));
        cli.output(opts.output, res, () => containerTable(res.stats, before));
      } while (opts.watch);
    });

  program
    .command('statsp [ID]')
    .description('List pod(s) resource usage statistics')
    .option(...outputOption())
    .option('--id <id>', 'filter by pod ID')
    .option('--label <key=value>', 'filter by label (repeatable)', collect, [])
    .option('-s, --seconds <n>', 'sample window for CPU % in the table', '1')
    .option('-w, --watch', 'keep printing every --seconds')
    .action(async (idArg: string | undefined, opts: StatsOpts) => {
      const filter = { id: idArg ?? opts.id ?? '', label_selector: labelSelector(opts.label) };
      const windowMs = Math.max(0, Number(opts.seconds) * 1000);
      do {
        const [first, res] = await sampleTwice(() => runtimeCall(cli.client(), 'ListPodSandboxStats', { filter }), opts.output === 'table' ? windowMs : 0);
        const before = new Map(first.stats.map((s) => [s.attributes?.id, s.linux?.cpu]));
        cli.output(opts.output, res, () => podTable(res.stats, before));
      } while (opts.watch);
    });

  program
    .command('events')
    .description('Stream container lifecycle events (GetContainerEvents) until interrupted')
    .option(...outputOption('json'))
    .action(async (opts: { output: OutputFormat }) => {
      const call = cli.client().runtime.GetContainerEvents({});
      await new Promise<void>((resolve, reject) => {
        call.on('data', (e: ContainerEventResponse__Output) => {
          cli.print(opts.output === 'table' ? eventLine(e) : formatStructured(e, opts.output));
        });
        call.on('error', reject);
        call.on('end', resolve);
        process.once('SIGINT', () => {
          call.cancel();
          resolve();
        });
      });
    });
}

function containerTable(stats: ContainerStats__Output[], before: Map<string | undefined, CpuUsage__Output | null>): string {
  return formatTable(
    ['CONTAINER', 'NAME', 'CPU %', 'MEM', 'DISK', 'INODES', 'SWAP'],
    stats.map((s) => [
      (s.attributes?.id ?? '').slice(0, 13),
      s.attributes?.metadata?.name ?? '',
      cpuPercent(s.cpu, before.get(s.attributes?.id)),
      humanBytes(s.memory?.working_set_bytes?.value),
      humanBytes(s.writable_layer?.used_bytes?.value),
      String(s.writable_layer?.inodes_used?.value ?? 0),
      humanBytes(s.swap?.swap_usage_bytes?.value),
    ]),
  );
}

function podTable(stats: PodSandboxStats__Output[], before: Map<string | undefined, CpuUsage__Output | null | undefined>): string {
  return formatTable(
    ['POD', 'POD ID', 'CPU %', 'MEM', 'PROCS', 'RX', 'TX'],
    stats.map((s) => [
      s.attributes?.metadata?.name ?? '',
      (s.attributes?.id ?? '').slice(0, 13),
      cpuPercent(s.linux?.cpu ?? null, before.get(s.attributes?.id)),
      humanBytes(s.linux?.memory?.working_set_bytes?.value),
      String(s.linux?.process?.process_count?.value ?? 0),
      humanBytes(s.linux?.network?.default_interface?.rx_bytes?.value),
      humanBytes(s.linux?.network?.default_interface?.tx_bytes?.value),
    ]),
  );
}

function eventLine(e: ContainerEventResponse__Output): string {
  const c = e.containers_statuses.find((s) => s.id === e.container_id);
  const when = new Date(Number(BigInt(e.created_at) / 1_000_000n)).toISOString();
  return `${when}  ${e.container_event_type.replace(/^CONTAINER_|_EVENT$/g, '')}  ${e.container_id.slice(0, 13)}  ${c?.metadata?.name ?? ''}  pod=${e.pod_sandbox_status?.metadata?.name ?? ''}`;
}
