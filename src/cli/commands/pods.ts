// runp, stopp, rmp, pods, inspectp: crictl's pod sandbox verbs, with crictl's flags and output.
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { outputOption } from '../context.js';
import { runtimeCall, type CriClient } from '../client.js';
import { createdAgo, formatTable, mapLines, parseInfo, type OutputFormat } from '../output.js';
import { applyClientFilter, collect, eachId, intOption, labelSelector, parsePodState, podStateWord, shortId } from '../filters.js';
import { readProtoFile } from '../proto-input.js';
import type { PodSandbox__Output } from '../../gen/runtime/v1/PodSandbox.js';
import type { PodSandboxConfig } from '../../gen/runtime/v1/PodSandboxConfig.js';
import type { PodSandboxStatusResponse__Output } from '../../gen/runtime/v1/PodSandboxStatusResponse.js';

interface PodsOpts {
  id?: string;
  name?: string;
  namespace?: string;
  state?: string;
  label: string[];
  runtime?: string;
  quiet?: boolean;
  verbose?: boolean;
  output: OutputFormat;
  latest?: boolean;
  last?: number;
  trunc: boolean;
}

/** ListPodSandbox with the server-side filters, then crictl's client-side ones (name/namespace regexps, handler), newest first. */
export async function listPods(client: CriClient, opts: Omit<PodsOpts, 'output' | 'trunc' | 'quiet' | 'verbose'>): Promise<PodSandbox__Output[]> {
  const state = opts.state === undefined ? undefined : parsePodState(opts.state);
  const res = await runtimeCall(client, 'ListPodSandbox', {
    filter: { id: opts.id ?? '', state: state ? { state } : null, label_selector: labelSelector(opts.label) },
  });
  const items = opts.runtime === undefined ? res.items : res.items.filter((p) => p.runtime_handler === opts.runtime);
  return applyClientFilter(items, opts, (p) => p.metadata?.name ?? '', (p) => p.metadata?.namespace ?? '');
}

function podsTable(items: PodSandbox__Output[], trunc: boolean): string {
  const rows = items.map((p) => [
    shortId(p.id, trunc),
    createdAgo(p.created_at),
    podStateWord(p.state),
    p.metadata?.name ?? '',
    p.metadata?.namespace ?? '',
    String(p.metadata?.attempt ?? 0),
    p.runtime_handler || '(default)',
  ]);
  return formatTable(['POD ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'ATTEMPT', 'RUNTIME'], rows);
}

/** The fields PodSandbox and PodSandboxStatus share, as crictl's verbose and table forms print them. */
type PodSummary = Pick<PodSandbox__Output, 'id' | 'metadata' | 'state' | 'created_at' | 'labels' | 'annotations' | 'runtime_handler'>;

function describePod(p: PodSummary, ips: string[] = []): string {
  const lines = [
    `ID: ${p.id}`,
    `Name: ${p.metadata?.name ?? ''}`,
    `UID: ${p.metadata?.uid ?? ''}`,
    `Namespace: ${p.metadata?.namespace ?? ''}`,
    `Attempt: ${p.metadata?.attempt ?? 0}`,
    `Status: ${p.state}`,
    `Created: ${new Date(Number(BigInt(p.created_at) / 1_000_000n)).toISOString()}`,
  ];
  const [ip, ...more] = ips;
  if (ip) lines.push(`IP Addresses: ${ip}`);
  for (const a of more) lines.push(`Additional IP: ${a}`);
  lines.push(...mapLines('Labels', p.labels), ...mapLines('Annotations', p.annotations));
  if (p.runtime_handler) lines.push(`Runtime handler: ${p.runtime_handler}`);
  return lines.join('\n');
}

/** inspectp's structured form: status and the 1.29 fields, with each verbose info value parsed as JSON where it is JSON. */
function inspectValue(res: PodSandboxStatusResponse__Output): Record<string, unknown> {
  const info = parseInfo(res.info);
  return { status: res.status, ...info, containers_statuses: res.containers_statuses, timestamp: res.timestamp };
}

function inspectTable(res: PodSandboxStatusResponse__Output): string {
  const s = res.status!;
  return describePod(s, [s.network?.ip ?? '', ...(s.network?.additional_ips ?? []).map((a) => a.ip)].filter(Boolean));
}

export function registerPods(program: Command, cli: CliContext): void {
  program
    .command('runp')
    .description('Run a new pod sandbox')
    .argument('<pod-config>', 'pod sandbox config, a JSON or YAML file (- = stdin)')
    .option('-r, --runtime <handler>', 'runtime handler to use', '')
    .action(async (file: string, opts: { runtime: string }) => {
      const config = (await readProtoFile(file, 'PodSandboxConfig')) as PodSandboxConfig;
      const res = await runtimeCall(cli.client(), 'RunPodSandbox', { config, runtime_handler: opts.runtime });
      cli.print(res.pod_sandbox_id);
    });

  program
    .command('stopp')
    .description('Stop one or more running pods')
    .argument('<pod-id...>', 'pod sandbox ids (or unique prefixes)')
    .action(async (ids: string[]) => {
      await eachId(ids, async (id) => {
        await runtimeCall(cli.client(), 'StopPodSandbox', { pod_sandbox_id: id });
        cli.print(`Stopped sandbox ${id}`);
      });
    });

  program
    .command('rmp')
    .description('Remove one or more pods')
    .argument('[pod-id...]', 'pod sandbox ids (or unique prefixes)')
    .option('-f, --force', 'remove a pod even if it is running (it is stopped first)')
    .option('-a, --all', 'remove all pods')
    .action(async (given: string[], opts: { force?: boolean; all?: boolean }) => {
      const client = cli.client();
      const ids = opts.all ? (await runtimeCall(client, 'ListPodSandbox', {})).items.map((p) => p.id) : given;
      if (ids.length === 0 && !opts.all) throw new Error('ID cannot be empty');
      await eachId(ids, async (id) => {
        if (!opts.force) {
          const st = await runtimeCall(client, 'PodSandboxStatus', { pod_sandbox_id: id });
          if (st.status?.state === 'SANDBOX_READY') throw new Error(`pod sandbox "${id}" is running, please stop it first (or use -f)`);
        }
        await runtimeCall(client, 'RemovePodSandbox', { pod_sandbox_id: id });
        cli.print(`Removed sandbox ${id}`);
      });
    });

  program
    .command('pods')
    .description('List pods')
    .option('--id <id>', 'only the pod with this id (or id prefix)')
    .option('--name <regexp>', 'only pods whose name matches')
    .option('--namespace <regexp>', 'only pods whose namespace matches')
    .option('-s, --state <state>', 'only pods in this state: ready or notready')
    .option('--label <key=value>', 'only pods with this label (repeatable)', collect, [])
    .option('-r, --runtime <handler>', 'only pods of this runtime handler')
    .option('-l, --latest', 'only the most recently created pod')
    .option('-n, --last <n>', 'only the n most recently created pods', intOption('--last'))
    .option('-q, --quiet', 'only pod ids')
    .option('-v, --verbose', 'verbose output')
    .option('--no-trunc', 'full pod ids')
    .option(...outputOption())
    .action(async (opts: PodsOpts) => {
      const items = await listPods(cli.client(), opts);
      if (opts.quiet) {
        if (items.length > 0) cli.print(items.map((p) => p.id).join('\n'));
        return;
      }
      cli.output(opts.output, { items }, () => (opts.verbose ? items.map((p) => describePod(p)).join('\n\n') : podsTable(items, opts.trunc)));
    });

  program
    .command('inspectp')
    .description('Display the status of one or more pods')
    .argument('<pod-id...>', 'pod sandbox ids (or unique prefixes)')
    .option('-q, --quiet', 'no verbose information')
    .option(...outputOption('json'))
    .action(async (ids: string[], opts: { quiet?: boolean; output: OutputFormat }) => {
      await eachId(ids, async (id) => {
        const res = await runtimeCall(cli.client(), 'PodSandboxStatus', { pod_sandbox_id: id, verbose: !opts.quiet });
        cli.output(opts.output, inspectValue(res), () => inspectTable(res));
      });
    });
}
