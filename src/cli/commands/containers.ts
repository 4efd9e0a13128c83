// crictl's container verbs: create, start, stop, rm, ps, inspect, update, and run (pod + container in one
// step). Plain CRI calls: they work against any runtime's socket.
import type { Command } from 'commander';
import { readdir, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { CliContext } from '../context.js';
import { outputOption, parseDuration } from '../context.js';
import { imageCall, runtimeCall, type CriClient } from '../client.js';
import { createdAgo, formatTable, mapLines, nanosToRfc3339, parseInfo, type OutputFormat } from '../output.js';
import {
  applyClientFilter,
  collect,
  containerStateWord,
  eachId,
  intOption,
  keyValues,
  labelSelector,
  parseContainerState,
  POD_NAME_LABEL,
  POD_NAMESPACE_LABEL,
  pullAuth,
  shortId,
  type PullAuthOptions,
} from '../filters.js';
import { readProtoFile } from '../proto-input.js';
import type { Container__Output } from '../../gen/runtime/v1/Container.js';
import type { ContainerFilter } from '../../gen/runtime/v1/ContainerFilter.js';
import type { ContainerConfig } from '../../gen/runtime/v1/ContainerConfig.js';
import type { PodSandboxConfig } from '../../gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerStatusResponse__Output } from '../../gen/runtime/v1/ContainerStatusResponse.js';
import type { LinuxContainerResources } from '../../gen/runtime/v1/LinuxContainerResources.js';

export interface ListOpts {
  id?: string;
  pod?: string;
  state?: string;
  label: string[];
  name?: string;
  namespace?: string;
  image?: string;
  all?: boolean;
  latest?: boolean;
  last?: number;
}

/** ListContainers with crictl's defaults: running ones only unless -a, --state, --latest or --last. */
export async function listContainers(client: CriClient, o: ListOpts): Promise<Container__Output[]> {
  const filter: ContainerFilter = { id: o.id ?? '', pod_sandbox_id: o.pod ?? '', label_selector: labelSelector(o.label) };
  if (o.state) filter.state = { state: parseContainerState(o.state) };
  else if (!o.all && !o.latest && !o.last) filter.state = { state: 'CONTAINER_RUNNING' };
  const res = await runtimeCall(client, 'ListContainers', { filter });
  const wanted = o.image ? res.containers.filter((c) => imageMatches(o.image!, c)) : res.containers;
  return applyClientFilter(wanted, o, (c) => c.metadata?.name ?? '', (c) => c.labels[POD_NAMESPACE_LABEL] ?? '');
}

/** --image matches the image as asked for, the image ID (with or without sha256:, or a prefix) or the ref. */
function imageMatches(want: string, c: Container__Output): boolean {
  const have = [c.image?.image ?? '', c.image?.user_specified_image ?? '', c.image_ref];
  const bare = want.replace(/^sha256:/, '');
  return have.some((h) => h === want || (bare.length >= 4 && h.replace(/^sha256:/, '').startsWith(bare)));
}

function listOptions(cmd: Command): Command {
  return cmd
    .option('--id <id>', 'filter by container ID (a prefix is enough)')
    .option('-p, --pod <id>', 'filter by pod ID')
    .option('-s, --state <state>', 'filter by state: created, running, exited, unknown')
    .option('--label <key=value>', 'filter by label (repeatable)', collect, [])
    .option('--name <regexp>', 'filter by container name (regular expression)')
    .option('--namespace <regexp>', 'filter by pod namespace (regular expression)')
    .option('--image <image>', 'filter by image')
    .option('-a, --all', 'all containers, not only running ones')
    .option('-l, --latest', 'only the most recently created container (any state)')
    .option('-n, --last <n>', 'only the n most recently created containers (any state)', intOption('--last'));
}

export interface PullOpts extends PullAuthOptions {
  pull: boolean;
  withPull?: boolean;
  pullTimeout?: string;
}

function pullOptions(cmd: Command, pullByDefault: boolean): Command {
  return cmd
    .option('--no-pull', pullByDefault ? 'do not pull the image first' : 'do not pull the image first (the default)')
    .option('--with-pull', pullByDefault ? 'pull the image first (the default)' : 'pull the image first')
    .option('--creds <user:password>', 'registry credentials for the pull')
    .option('--auth <base64>', 'base64-encoded user:password for the pull')
    .option('--username <name>', 'registry user name for the pull')
    .option('--pull-timeout <duration>', 'deadline of the pull (0 = none)', '0');
}

async function maybePull(cli: CliContext, opts: PullOpts, pullByDefault: boolean, config: ContainerConfig, pod: PodSandboxConfig | undefined): Promise<void> {
  if (opts.withPull && !opts.pull) throw new Error('--no-pull and --with-pull are both set');
  if (!(opts.withPull || (pullByDefault && opts.pull))) return;
  const image = config.image?.image ?? '';
  await imageCall(
    cli.client(),
    'PullImage',
    { image: { image, annotations: config.image?.annotations ?? {} }, auth: pullAuth(opts), sandbox_config: pod ?? null },
    parseDuration(opts.pullTimeout ?? '0'),
  );
}

async function readConfigs(ctrFile: string, podFile: string): Promise<[ContainerConfig, PodSandboxConfig]> {
  const config = (await readProtoFile(ctrFile, 'ContainerConfig')) as ContainerConfig;
  if (!config.image?.image) throw new Error(`${ctrFile}: image.image is required`);
  return [config, await readProtoFile(podFile, 'PodSandboxConfig')];
}

async function createContainer(cli: CliContext, podId: string, config: ContainerConfig, pod: PodSandboxConfig | undefined): Promise<string> {
  if (config.image && !config.image.user_specified_image) config.image.user_specified_image = config.image.image;
  const res = await runtimeCall(cli.client(), 'CreateContainer', { pod_sandbox_id: podId, config, sandbox_config: pod ?? null });
  return res.container_id;
}

/** IDs from the arguments, or every listed container with -a; an error when neither is given. */
async function targets(cli: CliContext, ids: string[], all: boolean | undefined, listed: () => Promise<Container__Output[]>): Promise<string[]> {
  if (all && ids.length) throw new Error('give container IDs or --all, not both');
  if (all) return (await listed()).map((c) => c.id);
  if (!ids.length) throw new Error('no container ID given (or use --all)');
  return ids;
}

export function registerContainers(program: Command, cli: CliContext): void {
  pullOptions(
    program
      .command('create')
      .description('Create a container in a pod (prints its ID)')
      .argument('<pod-id>', 'the pod sandbox')
      .argument('<container-config>', 'ContainerConfig file (JSON or YAML)')
      .argument('<pod-config>', 'the PodSandboxConfig the pod was run with (JSON or YAML)'),
    false,
  ).action(async (podId: string, ctrFile: string, podFile: string, opts: PullOpts) => {
    const [config, pod] = await readConfigs(ctrFile, podFile);
    await maybePull(cli, opts, false, config, pod);
    cli.print(await createContainer(cli, podId, config, pod));
  });

  program
    .command('start')
    .description('Start one or more created containers')
    .argument('<container-id...>')
    .action(async (ids: string[]) => {
      await eachId(ids, async (id) => {
        await runtimeCall(cli.client(), 'StartContainer', { container_id: id });
        cli.print(id);
      });
    });

  program
    .command('stop')
    .description('Stop one or more running containers')
    .argument('[container-id...]')
    .option('-t, --timeout <seconds>', 'seconds to wait after the stop signal before killing', intOption('--timeout'), 0)
    .option('-a, --all', 'stop every running container')
    .action(async (ids: string[], opts: { timeout: number; all?: boolean }) => {
      const list = await targets(cli, ids, opts.all, () => listContainers(cli.client(), { label: [], state: 'running' }));
      // the rpc may legitimately take the whole grace period: the call deadline is extended by it
      const deadline = cli.client().timeoutMs > 0 ? cli.client().timeoutMs + opts.timeout * 1000 : 0;
      await eachId(list, async (id) => {
        await runtimeCall(cli.client(), 'StopContainer', { container_id: id, timeout: opts.timeout }, deadline);
        cli.print(id);
      });
    });

  program
    .command('rm')
    .description('Remove one or more containers')
    .argument('[container-id...]')
    .option('-f, --force', 'stop running containers first (at once, no grace period)')
    .option('-a, --all', 'remove every container')
    .option('-k, --keep-logs', 'keep the container log file and its rotations')
    .action(async (ids: string[], opts: { force?: boolean; all?: boolean; keepLogs?: boolean }) => {
      const c = cli.client();
      const list = await targets(cli, ids, opts.all, () => listContainers(c, { label: [], all: true }));
      await eachId(list, async (id) => {
        const st = (await runtimeCall(c, 'ContainerStatus', { container_id: id, verbose: false })).status;
        if (st?.state === 'CONTAINER_RUNNING') {
          if (!opts.force) throw new Error(`container is running: stop it first, or use --force`);
          await runtimeCall(c, 'StopContainer', { container_id: id, timeout: 0 });
        }
        await runtimeCall(c, 'RemoveContainer', { container_id: id });
        // As crictl: the log file belongs to whoever asked for it (kubelet removes its own).
        if (!opts.keepLogs && st?.log_path) await removeLogs(st.log_path);
        cli.print(id);
      });
    });

  listOptions(program.command('ps').description('List containers (running ones unless -a)'))
    .option('-q, --quiet', 'only container IDs')
    .option('-v, --verbose', 'one block of details per container')
    .option('--no-trunc', 'full IDs')
    .option(...outputOption())
    .action(async (opts: ListOpts & { quiet?: boolean; verbose?: boolean; trunc: boolean; output: OutputFormat }) => {
      const list = await listContainers(cli.client(), opts);
      if (opts.quiet) {
        if (list.length) cli.print(list.map((c) => c.id).join('\n'));
        return;
      }
      if (opts.verbose && opts.output === 'table') {
        cli.print(list.map(verboseContainer).join('\n\n'));
        return;
      }
      cli.output(opts.output, { containers: list }, () =>
        formatTable(
          ['CONTAINER', 'IMAGE', 'CREATED', 'STATE', 'NAME', 'ATTEMPT', 'POD ID', 'POD', 'NAMESPACE'],
          list.map((c) => [
            shortId(c.id, opts.trunc),
            imageColumn(c.image?.image ?? '', opts.trunc),
            createdAgo(c.created_at),
            containerStateWord(c.state),
            c.metadata?.name ?? '',
            String(c.metadata?.attempt ?? 0),
            shortId(c.pod_sandbox_id, opts.trunc),
            c.labels[POD_NAME_LABEL] ?? 'unknown',
            c.labels[POD_NAMESPACE_LABEL] ?? 'unknown',
          ]),
        ),
      );
    });

  listOptions(program.command('inspect').description('Show the status of containers (by ID, or the ones the filters select)'))
    .argument('[container-id...]')
    .option('-q, --quiet', 'no verbose info (only the status)')
    .option(...outputOption('json'))
    .action(async (ids: string[], opts: ListOpts & { quiet?: boolean; output: OutputFormat }) => {
      const c = cli.client();
      const list = ids.length ? ids : (await listContainers(c, opts)).map((x) => x.id);
      if (!list.length) throw new Error('no container ID given and none matched the filters');
      for (const id of list) {
        const res = await runtimeCall(c, 'ContainerStatus', { container_id: id, verbose: !opts.quiet });
        cli.output(opts.output, inspectView(res), () => statusTable(res));
      }
    });

  program
    .command('update')
    .description('Update the resources of one or more running containers')
    .argument('<container-id...>')
    .option('--cpu-period <us>', 'CPU CFS period (microseconds)', intOption('--cpu-period'))
    .option('--cpu-quota <us>', 'CPU CFS quota per period (microseconds)', intOption('--cpu-quota'))
    .option('--cpu-share <shares>', 'CPU shares (relative weight)', intOption('--cpu-share'))
    .option('--cpuset-cpus <list>', 'CPUs the container may use (e.g. 0-1)')
    .option('--cpuset-mems <list>', 'memory nodes the container may use')
    .option('--memory <bytes>', 'memory limit in bytes', intOption('--memory'))
    .option('--memory-swap <bytes>', 'memory + swap limit in bytes', intOption('--memory-swap'))
    .option('--oom-score-adj <n>', 'OOM score adjustment', intOption('--oom-score-adj'))
    .option('--unified <key=value>', 'cgroup v2 unified setting (repeatable)', collect, [])
    .action(async (ids: string[], opts: UpdateOpts) => {
      const linux = updateResources(opts);
      await eachId(ids, async (id) => {
        await runtimeCall(cli.client(), 'UpdateContainerResources', { container_id: id, linux });
        cli.print(id);
      });
    });

  pullOptions(
    program
      .command('run')
      .description('Run a pod and a container in it in one step: RunPodSandbox, CreateContainer, StartContainer (prints the container ID)')
      .argument('<container-config>', 'ContainerConfig file (JSON or YAML)')
      .argument('<pod-config>', 'PodSandboxConfig file (JSON or YAML)')
      .option('-r, --runtime <handler>', 'runtime handler for the pod (default: the runtime\'s default)', ''),
    true,
  ).action(async (ctrFile: string, podFile: string, opts: PullOpts & { runtime: string }) => {
    const [config, pod] = await readConfigs(ctrFile, podFile);
    await maybePull(cli, opts, true, config, pod);
    const c = cli.client();
    const podId = (await runtimeCall(c, 'RunPodSandbox', { config: pod, runtime_handler: opts.runtime }, 0)).pod_sandbox_id;
    try {
      const id = await createContainer(cli, podId, config, pod);
      await runtimeCall(c, 'StartContainer', { container_id: id });
      cli.print(id);
    } catch (err) {
      // Unlike crictl, don't leave a half-made pod behind for the user to find and remove.
      await runtimeCall(c, 'StopPodSandbox', { pod_sandbox_id: podId }).catch(() => undefined);
      await runtimeCall(c, 'RemovePodSandbox', { pod_sandbox_id: podId }).catch(() => undefined);
      throw err;
    }
  });
}

async function removeLogs(logPath: string): Promise<void> {
  const dir = dirname(logPath);
  const rotated = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(`${basename(logPath)}.`));
  for (const f of [logPath, ...rotated.map((f) => join(dir, f))]) await unlink(f).catch(() => undefined);
}

function imageColumn(image: string, trunc: boolean): string {
  // kubelet passes image IDs; show them short like container IDs
  return trunc && /^(sha256:)?[0-9a-f]{64}$/.test(image) ? shortId(image) : image;
}

function verboseContainer(c: Container__Output): string {
  return [
    `ID: ${c.id}`,
    `PodID: ${c.pod_sandbox_id}`,
    `Namespace: ${c.labels[POD_NAMESPACE_LABEL] ?? 'unknown'}`,
    `Name: ${c.metadata?.name ?? ''}`,
    `Attempt: ${c.metadata?.attempt ?? 0}`,
    `State: ${containerStateWord(c.state)}`,
    `Image: ${c.image?.image ?? ''}`,
    `Created: ${createdAgo(c.created_at)}`,
    ...mapLines('Labels', c.labels),
    ...mapLines('Annotations', c.annotations),
  ].join('\n');
}

/**
 * crictl's inspect document: the status with readable times, and each verbose info key parsed beside it
 * (the daemon's "info" key becomes `.info`, so `jq .info.pid` works as with crictl).
 */
export function inspectView(res: ContainerStatusResponse__Output): Record<string, unknown> {
  const s = res.status;
  if (!s) return { status: null, ...parseInfo(res.info) };
  const started = s.state !== 'CONTAINER_CREATED' && s.started_at !== '0';
  const finished = s.finished_at !== '0';
  return {
    status: {
      ...s,
      created_at: nanosToRfc3339(s.created_at),
      started_at: started ? nanosToRfc3339(s.started_at) : '',
      finished_at: finished ? nanosToRfc3339(s.finished_at) : '',
    },
    ...parseInfo(res.info),
  };
}

function statusTable(res: ContainerStatusResponse__Output): string {
  const s = res.status;
  if (!s) return '';
  const lines = [`ID: ${s.id}`, `Name: ${s.metadata?.name ?? ''}`];
  if (s.metadata?.attempt) lines.push(`Attempt: ${s.metadata.attempt}`);
  lines.push(`State: ${containerStateWord(s.state)}`, `Image: ${s.image?.image ?? ''}`, `Created: ${createdAgo(s.created_at)}`);
  if (s.state !== 'CONTAINER_CREATED' && s.started_at !== '0') lines.push(`Started: ${createdAgo(s.started_at)}`);
  if (s.state === 'CONTAINER_EXITED') {
    if (s.finished_at !== '0') lines.push(`Finished: ${createdAgo(s.finished_at)}`);
    lines.push(`Exit Code: ${s.exit_code}`);
    if (s.reason) lines.push(`Reason: ${s.reason}`);
    if (s.message) lines.push(`Message: ${s.message}`);
  }
  if (s.log_path) lines.push(`Log: ${s.log_path}`);
  lines.push(...mapLines('Labels', s.labels), ...mapLines('Annotations', s.annotations));
  return lines.join('\n');
}

interface UpdateOpts {
  cpuPeriod?: number;
  cpuQuota?: number;
  cpuShare?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  memory?: number;
  memorySwap?: number;
  oomScoreAdj?: number;
  unified: string[];
}

/** Only the flags given: a CRI runtime reads 0 / empty as "leave as is". */
export function updateResources(o: UpdateOpts): LinuxContainerResources {
  const r: LinuxContainerResources = {};
  if (o.cpuPeriod !== undefined) r.cpu_period = o.cpuPeriod;
  if (o.cpuQuota !== undefined) r.cpu_quota = o.cpuQuota;
  if (o.cpuShare !== undefined) r.cpu_shares = o.cpuShare;
  if (o.cpusetCpus !== undefined) r.cpuset_cpus = o.cpusetCpus;
  if (o.cpusetMems !== undefined) r.cpuset_mems = o.cpusetMems;
  if (o.memory !== undefined) r.memory_limit_in_bytes = o.memory;
  if (o.memorySwap !== undefined) r.memory_swap_limit_in_bytes = o.memorySwap;
  if (o.oomScoreAdj !== undefined) r.oom_score_adj = o.oomScoreAdj;
  if (o.unified.length) r.unified = keyValues(o.unified, '--unified');
  if (Object.keys(r).length === 0) throw new Error('nothing to update: give at least one resource flag');
  return r;
}
