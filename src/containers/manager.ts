// The container manager: the life of a container (create, start, stop, remove), its index, exec, resource
// updates, log reopening, exit watching and restart recovery. Every state change of a container runs
// under that container's mutex and ends in an atomically written record and one lifecycle event.
// The OCI runtime is reached only through the RuntimeDriver.
import type { CommandIo } from '../stream/backend.js';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { isSameOrAbove } from '../util/fs.js';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { ImageService } from '../image/images.js';
import type { PodManager } from '../sandbox/manager.js';
import type { EventBus, ContainerEventType } from '../events/bus.js';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources.js';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus.js';
import type { ContainerRecord, PodRecord } from '../store/records.js';
import type { RuntimeDriver, RuntimeRef } from '../oci/runtime-driver.js';
import type { OciSpec } from '../oci/spec/types.js';
import type { ImageRunConfig } from '../oci/spec/input.js';
import type { SpecPreparer } from './k129-prepare.js';
import { k129Info } from './k129-info.js';
import { RecordStore } from '../store/record-store.js';
import { writeFileAtomic } from '../store/atomic.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { findByIdOrPrefix } from '../util/id-prefix.js';
import { nowNanos } from '../events/bus.js';
import { buildSpec } from '../oci/spec/build.js';
import { ociResources } from '../oci/spec/linux.js';
import { apparmorEnabled, checkHostPaths, ownOomScoreAdj, resolveContainerUser, resolveDevices, resolveSeccomp } from '../oci/spec/resolve.js';
import { completeCriLog } from '../oci/cri-log.js';
import { removeEmptyCgroupDir } from '../oci/cgroup-leftovers.js';
import { containerStatus, exitReason, matchesFilter, type ContainerFilter } from './status.js';
import { alreadyExists, cancelled, deadlineExceeded, errorMessage, failedPrecondition, invalidArgument, notFound, internal, SkiffError } from '../errors.js';

/**
 * kubelet's cap on ExecSync output (16 MiB), for stdout and stderr together and less a little room for
 * the message's framing: the response must fit the 16 MiB gRPC message limit on both ends.
 */
export const EXEC_SYNC_MAX_OUTPUT = 16 * 1024 * 1024 - 1024;
/** After SIGKILL, how long we wait for the monitor to record the exit before trusting the runtime. */
const KILL_WAIT_MS = 10_000;
/** Fallback for fs.watch on the exit dir (which can miss events, e.g. on some filesystems). */
const EXIT_POLL_MS = 1_000;
/** Every this many polls a running container's monitor is checked to be alive (a /proc read each). */
const MONITOR_CHECK_EVERY = 2;

export interface ContainerManagerDeps {
  config: SkiffConfig;
  log: Logger;
  images: ImageService;
  pods: PodManager;
  events: EventBus;
  driver: RuntimeDriver;
  /** Checks and lookups for the 1.29 additions (idmapped mounts, CDI devices): src/containers/k129-prepare.ts */
  prepareSpec?: SpecPreparer;
}

export interface CreateContainerRequest {
  podId: string;
  config: ContainerConfig__Output;
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

function validateRecord(v: unknown): ContainerRecord {
  const r = v as ContainerRecord;
  if (typeof r?.id !== 'string' || typeof r.podId !== 'string' || typeof r.bundle !== 'string' || typeof r.config !== 'object' || r.config === null) {
    throw new Error('not a container record');
  }
  if (!['created', 'running', 'exited', 'unknown'].includes(r.state)) throw new Error(`bad state ${String(r.state)}`);
  return r;
}

const msToNanos = (ms: number): string => (BigInt(Math.floor(ms)) * 1_000_000n).toString();

/** "SIGTERM", "TERM", "15" -> what the runtime's kill accepts; undefined for nonsense. */
export function normalizeSignal(sig: string | undefined): string | undefined {
  if (!sig) return undefined;
  const s = sig.trim().toUpperCase();
  if (/^\d+$/.test(s)) return Number(s) > 0 && Number(s) < 65 ? s : undefined;
  if (/^(SIG)?[A-Z0-9+-]+$/.test(s)) return s.startsWith('SIG') ? s : `SIG${s}`;
  return undefined;
}

const isKill = (sig: string) => sig === 'SIGKILL' || sig === '9';

/** Promise.all for steps that must all finish (none left running behind a failure): the first error once all settled. */
async function settleAll<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [x, y] = await Promise.allSettled([a, b]);
  if (x.status === 'rejected') throw x.reason;
  if (y.status === 'rejected') throw y.reason;
  return [x.value, y.value];
}

export class ContainerManager {
  private readonly containers = new Map<string, ContainerRecord>();
  /** "<pod>/<name>/<attempt>" -> container id: a name is reserved in its pod */
  private readonly names = new Map<string, string>();
  private readonly locks = new KeyedMutex();
  private readonly store: RecordStore<ContainerRecord>;
  private readonly bundlesDir: string;
  private readonly log: Logger;
  /** woken whenever an exit file shows up (before the record is updated) */
  private readonly exitWaiters = new Map<string, Set<() => void>>();
  /** Containers whose monitor died while they still run (warned once). */
  private readonly orphanWarned = new Set<string>();
  private orphanPolls = 0;
  /** Containers whose monitor is being checked right now. */
  private readonly monitorChecks = new Set<string>();
  private watcher?: FSWatcher;
  private poller?: NodeJS.Timeout;
  private minOom?: number;
  private apparmor?: boolean;

  private constructor(private readonly deps: ContainerManagerDeps) {
    this.store = new RecordStore(join(deps.config.root, 'containers'), validateRecord);
    this.bundlesDir = join(deps.config.state, 'containers');
    this.log = deps.log.child({ subsystem: 'containers' });
  }

  static async open(deps: ContainerManagerDeps): Promise<ContainerManager> {
    const m = new ContainerManager(deps);
    await mkdir(m.bundlesDir, { recursive: true, mode: 0o711 });
    await mkdir(deps.driver.exitDir, { recursive: true });
    await m.recover();
    m.watchExits();
    deps.pods.setChildren({
      stopAll: (pod) => m.stopAll(pod),
      removeAll: (pod) => m.removeAll(pod),
      statuses: async (pod) => m.statuses(pod),
    });
    return m;
  }

  close(): void {
    this.watcher?.close();
    clearInterval(this.poller);
  }

  // ---- index ---------------------------------------------------------------------------------------

  find(idOrPrefix: string): ContainerRecord | undefined {
    return findByIdOrPrefix(this.containers, idOrPrefix, 'container', 'container');
  }

  get(idOrPrefix: string): ContainerRecord {
    const c = this.find(idOrPrefix);
    if (!c) throw notFound(`container "${idOrPrefix}" not found`, { container: idOrPrefix });
    return c;
  }

  list(filter: ContainerFilter = {}): ContainerRecord[] {
    return [...this.containers.values()].filter((c) => matchesFilter(c, filter)).sort((a, b) => (BigInt(a.createdAt) < BigInt(b.createdAt) ? -1 : 1));
  }

  statuses(pod: PodRecord): ContainerStatus[] {
    return this.list({ podId: pod.id }).filter((c) => c.podId === pod.id).map(containerStatus);
  }

  private ref(c: ContainerRecord): RuntimeRef {
    return { id: c.id, handler: c.handler, bundle: c.bundle };
  }

  private publish(type: ContainerEventType, c: ContainerRecord): void {
    this.deps.events.publish({ type, containerId: c.id, podId: c.podId, createdAt: nowNanos() });
  }

  // ---- create --------------------------------------------------------------------------------------

  async create(req: CreateContainerRequest): Promise<ContainerRecord> {
    const { config } = req;
    const meta = config.metadata;
    if (!meta || meta.name === '') throw invalidArgument('container metadata.name is required');
    if (!config.image || config.image.image === '') throw invalidArgument('container image is required', { container: meta.name });
    const pod = this.deps.pods.get(req.podId);
    // Under the pod's lock: a pod being stopped or removed does not get new containers meanwhile.
    return this.deps.pods.withLock(pod.id, async () => {
      const current = this.deps.pods.find(pod.id);
      if (!current) throw notFound(`pod sandbox "${pod.id}" not found`, { pod: pod.id });
      if (current.state !== 'ready') throw failedPrecondition('pod sandbox is not ready', { pod: pod.id });
      const image = await this.deps.images.require(config.image!.image, current.handler);
      const key = `${current.id}/${meta.name}/${meta.attempt}`;
      const holder = this.names.get(key);
      if (holder !== undefined) throw alreadyExists(`a container named "${meta.name}" (attempt ${meta.attempt}) already exists in the pod: ${holder}`, { pod: current.id, container: holder });
      const id = randomBytes(32).toString('hex');
      this.names.set(key, id);
      const logDir = current.config.log_directory;
      const logPath = logDir && config.log_path ? join(logDir, config.log_path) : '';
      if (logPath && !isAbsolute(logPath)) {
        this.names.delete(key);
        throw invalidArgument(`log path ${logPath} is not absolute (pod log_directory must be absolute)`, { container: meta.name });
      }
      // "." or "x/.." would turn the pod's log directory itself (or one above it) into this container's log
      // file. Other paths that climb out are taken, as containerd and CRI-O take them: kubelet checks those.
      if (logPath && isSameOrAbove(logPath, logDir)) {
        this.names.delete(key);
        throw invalidArgument(`log path "${config.log_path.slice(0, 200)}" names the pod's log directory ${logDir} or one above it, not a file`, { container: meta.name });
      }
      const img = image.config.config ?? {};
      const rec: ContainerRecord = {
        id,
        podId: current.id,
        config,
        handler: current.handler,
        imageId: image.id,
        imageRef: image.repoTags[0] ?? image.repoDigests[0] ?? config.image!.image,
        imageRepoDigest: image.repoDigests[0],
        state: 'created',
        createdAt: nowNanos(),
        logPath,
        bundle: join(this.bundlesDir, id),
        stopSignal: img.StopSignal || undefined,
        creating: true,
      };
      const log = this.log.child({ container: id, pod: current.id });
      try {
        await this.locks.run(id, async () => {
          const t0 = performance.now();
          let tRecord = t0;
          // The record (creating) is on disk before anything recovery would have to undo; the lookups
          // for the spec, which create nothing, run meanwhile and while the rootfs is mounted.
          const [rootfs, { extras, devices, seccomp, apparmor }] = await settleAll(
            (async () => {
              await Promise.all([mkdir(rec.bundle, { recursive: true, mode: 0o700 }), this.store.save(id, rec)]);
              tRecord = performance.now();
              return this.deps.images.prepareRootfs(image, id);
            })(),
            (async () => {
              await checkHostPaths(config);
              const extras = (await this.deps.prepareSpec?.prepare(config, current)) ?? {};
              const [devices, seccomp] = await Promise.all([resolveDevices(config), resolveSeccomp(config)]);
              this.minOom ??= this.deps.config.restrictOomScoreAdj ? await ownOomScoreAdj() : undefined;
              return { extras, devices, seccomp, apparmor: this.apparmor ?? (await apparmorEnabled()) };
            })(),
          );
          this.apparmor ??= apparmor;
          const tRootfs = performance.now();
          const imageConfig: ImageRunConfig = {
            User: img.User,
            Env: img.Env,
            Entrypoint: img.Entrypoint ?? undefined,
            Cmd: img.Cmd ?? undefined,
            WorkingDir: img.WorkingDir,
            StopSignal: img.StopSignal,
          };
          const user = await resolveContainerUser(config, img.User, rootfs);
          const spec = buildSpec({
            containerId: id,
            config,
            image: imageConfig,
            pod: current,
            rootfs,
            user,
            devices,
            seccomp,
            minOomScoreAdj: this.minOom,
            apparmorEnabled: this.apparmor,
            cgroupDriver: this.deps.config.cgroupDriver,
            ...extras,
          });
          await this.deps.prepareSpec?.finish(spec, rootfs);
          await writeFileAtomic(join(rec.bundle, 'config.json'), JSON.stringify(spec));
          if (logPath) await mkdir(dirname(logPath), { recursive: true });
          const tSpec = performance.now();
          const { pid } = await this.deps.driver.create({
            ...this.ref(rec),
            name: `${meta.name}_${current.config.metadata?.name ?? ''}`,
            logPath: logPath || undefined,
            stdin: config.stdin,
            tty: config.tty,
          });
          log.debug({ recordMs: tRecord - t0, rootfsMs: tRootfs - tRecord, specMs: tSpec - tRootfs, runtimeCreateMs: performance.now() - tSpec }, 'create timings');
          rec.pid = pid;
          delete rec.creating;
          await this.store.save(id, rec);
          this.containers.set(id, rec);
        });
      } catch (caught) {
        // A plain error (EACCES, ENOSPC, … from mkdir or a write) would reach the client as UNKNOWN
        // without saying which container: give it a kind and the id, as the pod manager's steps do.
        const err = caught instanceof SkiffError ? caught : internal(`creating the container failed: ${errorMessage(caught)}`, { container: id }, caught);
        log.warn({ err: errorMessage(err) }, 'container create failed; undoing it');
        await this.locks.run(id, () => this.destroy(rec)).catch((e: unknown) => log.error({ err: errorMessage(e) }, 'undoing the failed create left resources behind'));
        if (this.names.get(key) === id) this.names.delete(key);
        throw err;
      }
      log.info({ name: meta.name, image: rec.imageRef }, 'container created');
      this.publish('CONTAINER_CREATED_EVENT', rec);
      return rec;
    });
  }

  // ---- start ---------------------------------------------------------------------------------------

  async start(idOrPrefix: string): Promise<void> {
    const found = this.get(idOrPrefix);
    await this.locks.run(found.id, async () => {
      const c = this.containers.get(found.id);
      if (!c) throw notFound(`container "${idOrPrefix}" not found`, { container: idOrPrefix });
      if (c.state !== 'created') throw failedPrecondition(`container is ${c.state}, not created: it can only be started once`, { container: c.id });
      try {
        await this.deps.driver.start(this.ref(c));
      } catch (err) {
        // A start that failed leaves a dead container: record it so kubelet sees why.
        const exit = await this.deps.driver.exit(this.ref(c)).catch(() => undefined);
        c.state = 'exited';
        c.finishedAt = nowNanos();
        c.exitCode = exit?.code ?? 128;
        c.reason = 'StartError';
        c.message = errorMessage(err);
        await this.store.save(c.id, c);
        this.publish('CONTAINER_STOPPED_EVENT', c);
        throw err;
      }
      c.state = 'running';
      c.startedAt = nowNanos();
      await this.store.save(c.id, c);
      this.publish('CONTAINER_STARTED_EVENT', c);
      // A container that already finished (`true`) is recorded now with its real code.
      await this.recordExitIfAny(c);
    });
  }

  // ---- exits ---------------------------------------------------------------------------------------

  /** Records the exit if the monitor wrote one. Call under the container's lock. */
  private async recordExitIfAny(c: ContainerRecord): Promise<boolean> {
    if (c.state === 'exited') return true;
    const exit = await this.deps.driver.exit(this.ref(c));
    if (!exit) return false;
    await this.markExited(c, exit.code, exit.at, exitReason(exit.code, exit.oomKilled));
    return true;
  }

  private async markExited(c: ContainerRecord, code: number, atMs: number, reason: string, message = ''): Promise<void> {
    this.orphanWarned.delete(c.id);
    c.state = 'exited';
    c.exitCode = code;
    c.finishedAt = msToNanos(atMs);
    if (!c.startedAt) c.startedAt = c.finishedAt;
    c.reason = reason;
    c.message = message;
    if (c.logPath) await completeCriLog(c.logPath).catch((err: unknown) => this.log.warn({ container: c.id, err: errorMessage(err) }, 'could not complete the CRI log'));
    await this.store.save(c.id, c);
    this.log.info({ container: c.id, code, reason }, 'container exited');
    this.publish('CONTAINER_STOPPED_EVENT', c);
  }

  private wakeExit(id: string): void {
    const set = this.exitWaiters.get(id);
    if (set) for (const w of set) w();
  }

  /** Waits up to `ms` for the monitor's exit file; undefined if it did not come. */
  private async waitExit(c: ContainerRecord, ms: number): Promise<Awaited<ReturnType<RuntimeDriver['exit']>>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const exit = await this.deps.driver.exit(this.ref(c));
      if (exit || Date.now() >= deadline) return exit;
      await new Promise<void>((resolve) => {
        let set = this.exitWaiters.get(c.id);
        if (!set) this.exitWaiters.set(c.id, (set = new Set()));
        const done = () => {
          clearTimeout(t);
          set.delete(done);
          if (set.size === 0) this.exitWaiters.delete(c.id);
          resolve();
        };
        const t = setTimeout(done, Math.min(50, Math.max(0, deadline - Date.now())));
        set.add(done);
      });
    }
  }

  private onExitFile(id: string): void {
    this.wakeExit(id);
    const c = this.containers.get(id);
    if (!c || c.state === 'exited' || c.creating) return;
    // Look before queueing on the lock: a poll must not pile up behind a long StopContainer.
    void (async () => {
      if (!(await this.deps.driver.exit(this.ref(c)))) return;
      await this.locks.run(id, async () => {
        const cur = this.containers.get(id);
        if (cur && cur.state !== 'exited') await this.recordExitIfAny(cur);
      });
    })().catch((err: unknown) => this.log.warn({ container: id, err: errorMessage(err) }, 'recording an exit failed'));
  }

  /**
   * A monitor that died (killed, OOM) writes no exit file: without a look at it, its container would stay
   * RUNNING forever. Once the runtime says the process is gone, the exit is recorded with its code unknown.
   */
  private checkMonitor(id: string): void {
    const c = this.containers.get(id);
    // one check at a time per container (a slow runtime must not pile them up on its lock), and a container
    // known to run on without its monitor is asked about less often (each ask is a runtime process)
    if (!c || this.monitorChecks.has(id) || (this.orphanWarned.has(id) && ++this.orphanPolls % 5 !== 0)) return;
    this.monitorChecks.add(id);
    void (async () => {
      if (await this.deps.driver.monitorAlive(this.ref(c))) return;
      await this.locks.run(id, async () => {
        const cur = this.containers.get(id);
        if (!cur || cur.state !== 'running' || cur.creating || (await this.recordExitIfAny(cur))) return;
        const st = await this.deps.driver.state(this.ref(cur));
        if (st?.status === 'running' || st?.status === 'paused') {
          if (!this.orphanWarned.has(id)) this.log.warn({ container: id }, 'its monitor (conmon) died; the container still runs, its exit code will be lost');
          this.orphanWarned.add(id);
          return;
        }
        this.orphanWarned.delete(id);
        await this.markExited(cur, 255, Date.now(), 'Error', 'exited after its monitor (conmon) died; exit code unknown');
      });
    })()
      .catch((err: unknown) => this.log.warn({ container: id, err: errorMessage(err) }, 'checking the monitor failed'))
      .finally(() => this.monitorChecks.delete(id));
  }

  private watchExits(): void {
    try {
      this.watcher = watch(this.deps.driver.exitDir, (_event, name) => {
        if (name) this.onExitFile(name.toString());
      });
      this.watcher.on('error', (err) => this.log.warn({ err: errorMessage(err) }, 'exit dir watch failed; polling only'));
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot watch the exit dir; polling only');
    }
    let polls = 0;
    this.poller = setInterval(() => {
      const checkMonitors = ++polls % MONITOR_CHECK_EVERY === 0;
      for (const c of this.containers.values()) {
        if (c.state !== 'running' || c.creating) continue;
        this.onExitFile(c.id);
        if (checkMonitors) this.checkMonitor(c.id);
      }
    }, EXIT_POLL_MS);
    this.poller.unref();
  }

  // ---- stop ----------------------------------------------------------------------------------------

  /** StopContainer: returns once the exit is recorded. Idempotent (an exited container is fine). */
  async stop(idOrPrefix: string, timeoutSeconds: number): Promise<void> {
    const found = this.get(idOrPrefix);
    await this.locks.run(found.id, async () => {
      const c = this.containers.get(found.id);
      if (c) await this.stopLocked(c, timeoutSeconds);
    });
  }

  private async stopLocked(c: ContainerRecord, timeoutSeconds: number): Promise<void> {
    if (c.state === 'exited') return;
    if (await this.recordExitIfAny(c)) return;
    const ref = this.ref(c);
    if (c.state === 'created') {
      // Never started: nothing to signal gracefully. Deleting it in the runtime ends its process.
      await this.deps.driver.delete(ref);
      const exit = await this.waitExit(c, 2_000);
      await this.markExited(c, exit?.code ?? 137, exit?.at ?? Date.now(), 'Error', exit ? '' : 'killed before it was started');
      return;
    }
    const signal = normalizeSignal(c.stopSignal) ?? 'SIGTERM';
    if (timeoutSeconds > 0 && !isKill(signal)) {
      await this.deps.driver.kill(ref, signal);
      const exit = await this.waitExit(c, timeoutSeconds * 1000);
      if (exit) return this.markExited(c, exit.code, exit.at, exitReason(exit.code, exit.oomKilled));
      this.log.info({ container: c.id, signal, timeoutSeconds }, 'container did not stop in time; killing it');
    }
    const t0 = Date.now();
    await this.deps.driver.kill(ref, 'SIGKILL', true);
    const t1 = Date.now();
    const exit = await this.waitExit(c, KILL_WAIT_MS);
    this.log.debug({ container: c.id, killMs: t1 - t0, exitMs: Date.now() - t1 }, 'killed');
    if (exit) return this.markExited(c, exit.code, exit.at, exitReason(exit.code, exit.oomKilled));
    // The monitor is gone or stuck: trust the runtime that the process is dead, but say we lack the code.
    const st = await this.deps.driver.state(ref);
    if (st && st.status !== 'stopped') throw deadlineExceeded(`container still ${st.status} ${KILL_WAIT_MS} ms after SIGKILL`, { container: c.id });
    await this.markExited(c, 137, Date.now(), 'Error', 'killed; its monitor recorded no exit code');
  }

  async stopAll(pod: PodRecord): Promise<void> {
    // kubelet stops containers itself with their grace periods first; whatever is left goes at once.
    await this.eachOfPod(pod, 'stopping', (id) => this.stop(id, 0));
  }

  /** Runs fn on every container of the pod at once; one INTERNAL error lists all failures. Returns how many. */
  private async eachOfPod(pod: PodRecord, doing: string, fn: (id: string) => Promise<void>): Promise<number> {
    const mine = [...this.containers.values()].filter((c) => c.podId === pod.id);
    const results = await Promise.allSettled(mine.map((c) => fn(c.id)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) throw internal(`${doing} containers: ${failed.map((f) => errorMessage(f.reason)).join('; ')}`, { pod: pod.id });
    return mine.length;
  }

  // ---- remove --------------------------------------------------------------------------------------

  /** RemoveContainer: force-stops a running container; a missing one is fine. */
  async remove(idOrPrefix: string): Promise<void> {
    const found = this.find(idOrPrefix);
    if (!found) return;
    await this.locks.run(found.id, async () => {
      const c = this.containers.get(found.id);
      if (!c) return;
      if (c.state !== 'exited') await this.stopLocked(c, 0);
      await this.destroy(c);
      this.publish('CONTAINER_DELETED_EVENT', c);
    });
  }

  async removeAll(pod: PodRecord): Promise<void> {
    const removed = await this.eachOfPod(pod, 'removing', (id) => this.remove(id));
    if (removed > 0 && this.deps.config.cgroupDriver === 'cgroupfs') {
      const left = await removeEmptyCgroupDir(pod.cgroupParent);
      if (left.length > 0) this.log.debug({ pod: pod.id, left }, 'pod cgroup dirs made by the runtime stay');
    }
  }

  /** Releases everything a container holds. Idempotent, tolerates half-built containers. Call under its lock. */
  private async destroy(c: ContainerRecord): Promise<void> {
    const ref = this.ref(c);
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${errorMessage(err)}`);
      }
    };
    await attempt('runtime delete', () => this.deps.driver.delete(ref));
    await attempt('rootfs', () => this.deps.images.removeRootfs(c.id));
    await attempt('monitor files', () => this.deps.driver.cleanup(ref));
    await attempt('bundle', () => rm(c.bundle, { recursive: true, force: true }));
    if (problems.length > 0) {
      // keep the record: a later remove retries what failed
      this.log.warn({ container: c.id, problems }, 'container resources could not all be released');
      throw internal(`removing container: ${problems.join('; ')}`, { container: c.id });
    }
    await this.store.remove(c.id);
    this.containers.delete(c.id);
    const meta = c.config.metadata;
    const key = `${c.podId}/${meta?.name ?? ''}/${meta?.attempt ?? 0}`;
    if (this.names.get(key) === c.id) this.names.delete(key);
  }

  // ---- status, exec, update, logs ------------------------------------------------------------------

  /** The status, plus verbose info (spec, pid, handler) when asked. */
  async status(idOrPrefix: string, verbose: boolean): Promise<{ status: ContainerStatus; info: Record<string, string> }> {
    const c = this.get(idOrPrefix);
    const info: Record<string, string> = {};
    if (verbose) {
      const spec = await readFile(join(c.bundle, 'config.json'), 'utf8').then(
        (t) => JSON.parse(t) as unknown,
        () => null,
      );
      info.info = JSON.stringify({
        sandboxID: c.podId,
        pid: c.state === 'running' ? (c.pid ?? 0) : 0,
        runtimeHandler: c.handler,
        runtimeType: 'conmon',
        bundle: c.bundle,
        logPath: c.logPath,
        imageId: c.imageId,
        stopSignal: c.stopSignal ?? 'SIGTERM',
        config: c.config,
        runtimeSpec: spec,
        ...k129Info(c.config, spec),
      });
    }
    return { status: containerStatus(c), info };
  }

  private async spec(c: ContainerRecord): Promise<OciSpec> {
    try {
      return JSON.parse(await readFile(join(c.bundle, 'config.json'), 'utf8')) as OciSpec;
    } catch (err) {
      throw internal(`cannot read the container's spec: ${errorMessage(err)}`, { container: c.id });
    }
  }

  /** Runs `cmd` in the container as its user; `signal` (the client went away) kills it like a timeout. */
  async execSync(idOrPrefix: string, cmd: string[], timeoutSeconds: number, signal?: AbortSignal): Promise<ExecSyncResult> {
    if (cmd.length === 0) throw invalidArgument('cmd is required');
    const c = this.get(idOrPrefix);
    if (c.state !== 'running') throw failedPrecondition(`container is ${c.state}, not running`, { container: c.id });
    const spec = await this.spec(c);
    // The container's own process settings (user, env, cwd, capabilities, …) with the new command.
    const process = { ...spec.process, args: cmd, terminal: false };
    delete process.oomScoreAdj;
    const res = await this.deps.driver.exec(this.ref(c), { process, timeoutMs: timeoutSeconds * 1000, maxOutputBytes: EXEC_SYNC_MAX_OUTPUT, signal });
    if (signal?.aborted) throw cancelled('ExecSync cancelled by the client; the process was killed', { container: c.id });
    if (res.timedOut) {
      throw deadlineExceeded(`command ${JSON.stringify(cmd.join(' ').slice(0, 200))} timed out after ${timeoutSeconds} s; the process was killed`, { container: c.id });
    }
    return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode };
  }

  async updateResources(idOrPrefix: string, resources: LinuxContainerResources__Output | null): Promise<void> {
    const found = this.get(idOrPrefix);
    await this.locks.run(found.id, async () => {
      const c = this.containers.get(found.id);
      if (!c) throw notFound(`container "${idOrPrefix}" not found`, { container: idOrPrefix });
      if (c.state !== 'running' && c.state !== 'created') throw failedPrecondition(`container is ${c.state}: its resources cannot change`, { container: c.id });
      if (!resources) return;
      await this.deps.driver.update(this.ref(c), ociResources(resources));
      // Keep what was applied, so status reports it and the spec stays the truth for a restart. The
      // in-memory record changes only once both files are written: a failed write leaves no half state.
      const config = { ...c.config, linux: { ...(c.config.linux ?? { security_context: null }), resources } };
      const spec = await this.spec(c).catch(() => undefined);
      if (spec) {
        spec.linux.resources = { ...spec.linux.resources, ...ociResources(resources) };
        await writeFileAtomic(join(c.bundle, 'config.json'), JSON.stringify(spec));
      }
      await this.store.save(c.id, { ...c, config });
      c.config = config;
    });
  }

  async reopenLog(idOrPrefix: string): Promise<void> {
    const c = this.get(idOrPrefix);
    if (c.state !== 'running') throw failedPrecondition(`container is ${c.state}, not running`, { container: c.id });
    if (!c.logPath) return;
    await mkdir(dirname(c.logPath), { recursive: true });
    await this.deps.driver.reopenLog(this.ref(c), c.logPath);
  }

  /** Streaming exec (exec -it): the container's process settings with `cmd`, to the client's stdio. */
  async execStreaming(idOrPrefix: string, cmd: string[], tty: boolean, io: CommandIo): Promise<number> {
    if (cmd.length === 0) throw invalidArgument('cmd is required');
    const c = this.get(idOrPrefix);
    if (c.state !== 'running') throw failedPrecondition(`container is ${c.state}, not running`, { container: c.id });
    const spec = await this.spec(c);
    const env = spec.process.env ?? [];
    // Like other runtimes: a terminal needs a TERM to be usable.
    const withTerm = tty && !env.some((e) => e.startsWith('TERM=')) ? [...env, 'TERM=xterm'] : env;
    const process = { ...spec.process, args: cmd, terminal: tty, env: withTerm };
    delete process.oomScoreAdj;
    return this.deps.driver.execStreaming(this.ref(c), { process, tty }, io);
  }

  /** Attach to a running container's stdio; resolves when it exits or the client detaches. */
  async attach(idOrPrefix: string, io: CommandIo): Promise<void> {
    const c = this.get(idOrPrefix);
    if (c.state !== 'running') throw failedPrecondition(`container is ${c.state}, not running`, { container: c.id });
    await this.deps.driver.attach(this.ref(c), { tty: c.config.tty }, io);
  }

  /** The attach socket of a running container (for the streaming server). */
  attachSocket(idOrPrefix: string): string {
    const c = this.get(idOrPrefix);
    return this.deps.driver.attachSocketPath(this.ref(c));
  }

  // ---- recovery ------------------------------------------------------------------------------------

  /**
   * Start-up: half-created containers are undone; created/running ones are checked against the
   * monitor's exit files (exits while we were down get their real code) and the runtime; bundles
   * without a record are deleted. One bad record never stops the daemon.
   */
  private async recover(): Promise<void> {
    const { records, problems } = await this.store.loadAll();
    for (const p of problems) this.log.error({ file: p.file, err: p.error }, 'damaged container record moved aside');
    for (const c of records.values()) {
      try {
        if (c.creating) {
          this.log.warn({ container: c.id }, 'container was being created when the daemon stopped; undoing it');
          await this.destroy(c).catch(() => undefined);
          continue;
        }
        if (!this.deps.pods.find(c.podId)) {
          // its pod was removed while this container could not be (the pod's removal goes on regardless)
          this.log.warn({ container: c.id, pod: c.podId }, 'container of a pod that no longer exists; removing it');
          await this.locks.run(c.id, async () => {
            if (c.state !== 'exited') await this.deps.driver.kill(this.ref(c), 'SIGKILL', true).catch(() => undefined);
            await this.destroy(c);
          });
          continue;
        }
        this.containers.set(c.id, c);
        const meta = c.config.metadata;
        this.names.set(`${c.podId}/${meta?.name ?? ''}/${meta?.attempt ?? 0}`, c.id);
        if (c.state === 'exited') {
          if (c.logPath) await completeCriLog(c.logPath).catch(() => undefined);
          continue;
        }
        if (await this.recordExitIfAny(c)) continue;
        const st = await this.deps.driver.state(this.ref(c)).catch(() => undefined);
        if (!st) {
          await this.markExited(c, 255, Date.now(), 'Error', 'the runtime no longer knows this container (host rebooted?); exit code unknown');
        } else if (st.status === 'stopped') {
          // exited, but the monitor has not written (or could not write) the code
          const exit = await this.waitExit(c, 2_000);
          if (exit) await this.markExited(c, exit.code, exit.at, exitReason(exit.code, exit.oomKilled));
          else await this.markExited(c, 255, Date.now(), 'Error', 'exited while its monitor was gone; exit code unknown');
        } else if (st.status === 'running' && c.state === 'created') {
          // started, but the daemon died before recording it
          c.state = 'running';
          c.startedAt ??= nowNanos();
          await this.store.save(c.id, c);
        }
      } catch (err) {
        this.log.error({ container: c.id, err: errorMessage(err) }, 'could not recover container; left as found');
      }
    }
    let dirs: string[] = [];
    try {
      const { readdir } = await import('node:fs/promises');
      dirs = await readdir(this.bundlesDir);
    } catch {
      dirs = [];
    }
    for (const name of dirs) {
      if (this.containers.has(name)) continue;
      this.log.warn({ bundle: name }, 'container bundle without a record; deleting it');
      await rm(join(this.bundlesDir, name), { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** All records (stats). */
  all(): ContainerRecord[] {
    return [...this.containers.values()];
  }
}
