// `logs`: as crictl, the client reads the CRI log file itself (ContainerStatus.log_path), so it needs to run
// on the node; follow mode polls the file and ends once the container is no longer running.
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { runtimeCall, type CriClient } from '../client.js';
import { intOption } from '../filters.js';
import { formatMessage, LimitedSink, LogFile, parseSince, selectMessages, type LogMessage, type LogSink } from '../log-reader.js';
import type { ContainerStatus__Output } from '../../gen/runtime/v1/ContainerStatus.js';

interface LogsOpts {
  follow?: boolean;
  tail: number;
  timestamps?: boolean;
  since?: string;
  limitBytes: number;
  previous?: boolean;
  reopen?: boolean;
}

const POLL_MS = 100;
const STATUS_EVERY_MS = 500;

async function status(client: CriClient, id: string): Promise<ContainerStatus__Output> {
  const st = (await runtimeCall(client, 'ContainerStatus', { container_id: id, verbose: false })).status;
  if (!st) throw new Error(`no status for container ${id}`);
  return st;
}

/** The container of the same name and pod with the highest earlier attempt (kubelet's restarts). */
async function previousInstance(client: CriClient, cur: ContainerStatus__Output, podId: string): Promise<ContainerStatus__Output> {
  const all = (await runtimeCall(client, 'ListContainers', { filter: { pod_sandbox_id: podId } })).containers;
  const attempt = cur.metadata?.attempt ?? 0;
  const prev = all
    .filter((c) => c.id !== cur.id && c.metadata?.name === cur.metadata?.name && (c.metadata?.attempt ?? 0) < attempt)
    .sort((a, b) => (b.metadata?.attempt ?? 0) - (a.metadata?.attempt ?? 0))[0];
  if (!prev) throw new Error(`container ${cur.id} has no previous instance in its pod`);
  return status(client, prev.id);
}

export function registerLogs(program: Command, cli: CliContext): void {
  program
    .command('logs')
    .description("Print a container's log (reads the CRI log file named by its status)")
    .argument('<container-id>')
    .option('-f, --follow', 'keep printing new output until the container stops')
    .option('--tail <n>', 'only the last n lines (-1 = all)', intOption('--tail'), -1)
    .option('-t, --timestamps', 'prefix each line with its time')
    .option('--since <time>', 'only lines since a time (RFC 3339), Unix seconds, or a duration back (e.g. 42m)')
    .option('--limit-bytes <n>', 'stop after n bytes (-1 = no limit)', intOption('--limit-bytes'), -1)
    .option('-p, --previous', 'the log of the previous instance of the container (an earlier attempt) in its pod')
    .option('-r, --reopen', 'ask the runtime to reopen the log file first (ReopenContainerLog)')
    .action(async (id: string, opts: LogsOpts) => {
      const client = cli.client();
      let st = await status(client, id);
      if (opts.previous) {
        const podId = (await runtimeCall(client, 'ListContainers', { filter: { id: st.id } })).containers[0]?.pod_sandbox_id;
        if (!podId) throw new Error(`container ${id} not found in any pod`);
        st = await previousInstance(client, st, podId);
      }
      if (opts.reopen) await runtimeCall(client, 'ReopenContainerLog', { container_id: st.id });
      if (!st.log_path) throw new Error(`container ${st.id} has no log path`);

      const sink = new LimitedSink(stdSink(), opts.limitBytes);
      const sinceMs = opts.since ? parseSince(opts.since) : undefined;
      const emit = (msgs: LogMessage[]) => {
        for (const m of msgs) sink.write(m.stream, formatMessage(m, opts.timestamps === true));
      };
      const file = new LogFile(st.log_path);
      try {
        emit(selectMessages(await file.readMore(), { tail: opts.tail, sinceMs }));
        if (opts.follow && !opts.previous) await follow(client, st.id, file, (m) => emit(selectMessages(m, { tail: -1, sinceMs })), () => sink.exhausted);
        emit(file.joiner.flush());
      } finally {
        await file.close();
      }
    });
}

async function follow(client: CriClient, id: string, file: LogFile, emit: (m: LogMessage[]) => void, done: () => boolean): Promise<void> {
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
  };
  process.once('SIGINT', onSigint);
  try {
    let lastCheck = 0;
    while (!interrupted && !done()) {
      emit(await file.readMore());
      if (Date.now() - lastCheck >= STATUS_EVERY_MS) {
        lastCheck = Date.now();
        const running = await status(client, id).then(
          (s) => s.state === 'CONTAINER_RUNNING',
          () => false,
        );
        if (!running) {
          // what the container wrote before it ended
          emit(await file.readMore());
          return;
        }
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

function stdSink(): LogSink {
  return {
    write(stream, text) {
      // the log's own bytes (LogFile reads them as latin1)
      (stream === 'stderr' ? process.stderr : process.stdout).write(Buffer.from(text, 'latin1'));
    },
  };
}
