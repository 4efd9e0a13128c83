// The pod manager: the life of a pod sandbox (run, stop, remove), its index, and restart recovery.
// Every state change of a pod runs under that pod's mutex and ends in an atomically written record.
// Teardown is one idempotent routine used by stop, remove, a failed run and recovery alike.
import { randomBytes } from 'node:crypto';
import { mkdir, rm, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus.js';
import type { PodRecord } from '../store/records.js';
import { RecordStore } from '../store/record-store.js';
import { writeJsonAtomic } from '../store/atomic.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { lookPath } from '../util/which.js';
import { findByIdOrPrefix } from '../util/id-prefix.js';
import { pathExists } from '../util/fs.js';
import { nowNanos } from '../events/bus.js';
import { CniRunner, loadCniNetwork, podIpsFromResult, type CniAttachment } from '../net/cni.js';
import { planPod, type PodPlan } from './plan.js';
import { pinNamespaces, unpinNamespace, startPidInit, stopPidInit, isPinned, pidInitAlive } from './namespaces.js';
import { ensurePrivateMount, mountTmpfs, unmountAll, mountsUnder } from './mounts.js';
import { createCgroup, removeCgroupDirs, applyCgroupLimits } from './cgroups.js';
import { applySysctls } from './sysctls.js';
import { writePodFiles } from './files.js';
import { validatePodRecord } from './record-check.js';
import { alreadyExists, cancelled, failedPrecondition, internal, notFound, errorMessage } from '../errors.js';

/** The copy of a pod's record kept in its runtime dir (see save). */
const RECORD_COPY = 'record.json';

/** Size of the per-pod /dev/shm, as kubelet and other runtimes default it. */
const SHM_OPTIONS = 'rw,nosuid,nodev,noexec,mode=1777,size=64m';

/**
 * What the containers module plugs in. Called under the pod's mutex: these must not call back into
 * PodManager operations that take it (stop/remove/withLock) for the same pod.
 */
export interface PodChildren {
  /** Stop every container of the pod (StopPodSandbox). */
  stopAll(pod: PodRecord): Promise<void>;
  /** Remove every container of the pod (RemovePodSandbox), stopping running ones first. */
  removeAll(pod: PodRecord): Promise<void>;
  /** CRI statuses of the pod's containers (PodSandboxStatus.containers_statuses). */
  statuses(pod: PodRecord): Promise<ContainerStatus[]>;
}

const NO_CHILDREN: PodChildren = {
  stopAll: async () => undefined,
  removeAll: async () => undefined,
  statuses: async () => [],
};

export interface RunPodRequest {
  config: PodSandboxConfig__Output;
  /** '' = the default handler */
  handler: string;
  /** aborted when the client cancels: the run is undone instead of leaving a pod nobody knows */
  signal?: AbortSignal;
}

function nameKey(config: PodSandboxConfig__Output): string {
  const m = config.metadata!;
  return JSON.stringify([m.name, m.namespace, m.uid, m.attempt]);
}

export class PodManager {
  private readonly pods = new Map<string, PodRecord>();
  /** name keys of pods that exist or are being created (a name is reserved for its pod) */
  private readonly names = new Map<string, string>();
  private readonly locks = new KeyedMutex();
  private readonly store: RecordStore<PodRecord>;
  private readonly cni: CniRunner;
  private readonly podsDir: string;
  private children: PodChildren = NO_CHILDREN;

  private constructor(
    private readonly config: SkiffConfig,
    private readonly handlers: RuntimeHandlers,
    private readonly log: Logger,
  ) {
    this.store = new RecordStore(join(config.root, 'pods'), validatePodRecord);
    this.cni = new CniRunner(config.cni.binDir);
    this.podsDir = join(config.state, 'pods');
  }

  /** Loads the records and reconciles them with the machine (see recover). */
  static async open(config: SkiffConfig, handlers: RuntimeHandlers, log: Logger): Promise<PodManager> {
    const m = new PodManager(config, handlers, log.child({ subsystem: 'pods' }));
    await ensurePrivateMount(m.podsDir);
    await m.recover();
    m.checkAllNetworks().catch((err: unknown) => m.log.warn({ err: errorMessage(err) }, 'CNI CHECK of recovered pods stopped'));
    return m;
  }

  /** The containers module registers itself here (stop/remove a pod's containers, their statuses). */
  setChildren(children: PodChildren): void {
    this.children = children;
  }

  /** Exact id or unique prefix -> the pod; NOT_FOUND otherwise (INVALID_ARGUMENT if ambiguous). */
  get(idOrPrefix: string): PodRecord {
    const pod = this.find(idOrPrefix);
    if (!pod) throw notFound(`pod sandbox "${idOrPrefix}" not found`, { pod: idOrPrefix });
    return pod;
  }

  find(idOrPrefix: string): PodRecord | undefined {
    return findByIdOrPrefix(this.pods, idOrPrefix, 'pod sandbox', 'pod');
  }

  list(): PodRecord[] {
    return [...this.pods.values()];
  }

  /** Runs `fn` under the pod's mutex (the containers module uses it to order its work against stop/remove). */
  withLock<T>(podId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(podId, fn);
  }

  /**
   * A ready pod whose init (the holder of its PID namespace) has died is dead as a whole: the kernel killed
   * every process of that namespace with it. Such a pod turns NOTREADY (persisted) the first time it is
   * looked at, so kubelet sees it and makes a new one. Stop still releases the rest.
   */
  async refresh(pod: PodRecord): Promise<PodRecord> {
    const ns = pod.namespaces;
    if (pod.state !== 'ready' || ns.pidInitPid === undefined || ns.pidInitStartTime === undefined) return pod;
    if (await pidInitAlive(ns.pidInitPid, ns.pidInitStartTime)) return pod;
    await this.locks.run(pod.id, async () => {
      if (pod.state !== 'ready' || !this.pods.has(pod.id) || (await pidInitAlive(ns.pidInitPid!, ns.pidInitStartTime!))) return;
      this.log.warn({ pod: pod.id, pid: ns.pidInitPid }, 'pod init exited; marking the pod NOTREADY');
      pod.state = 'notready';
      await this.save(pod);
    });
    return pod;
  }

  async containerStatuses(pod: PodRecord): Promise<ContainerStatus[]> {
    return this.children.statuses(pod);
  }

  async run(req: RunPodRequest): Promise<PodRecord> {
    const id = randomBytes(32).toString('hex');
    const handler = this.handlers.config_(req.handler).name;
    const plan = this.plan(req.config, id);
    const network = plan.hostNetwork ? undefined : await loadCniNetwork(this.config.cni.confDir);
    if (!plan.hostNetwork && !network)
      throw failedPrecondition(`no CNI network config in ${this.config.cni.confDir}: only hostNetwork pods can run`, { path: this.config.cni.confDir });
    const catatonit = plan.podPid ? await lookPath('catatonit') : undefined;
    if (plan.podPid && !catatonit) throw failedPrecondition('catatonit is needed for a pod-shared PID namespace and was not found on PATH');

    const key = nameKey(req.config);
    const holder = this.names.get(key);
    if (holder !== undefined)
      throw alreadyExists(`a pod sandbox named "${req.config.metadata!.name}" (namespace "${req.config.metadata!.namespace}", attempt ${req.config.metadata!.attempt}) already exists: ${holder}`, { pod: holder });
    this.names.set(key, id);

    const dir = join(this.podsDir, id);
    const pod: PodRecord = {
      id,
      config: req.config,
      handler,
      state: 'notready',
      createdAt: nowNanos(),
      namespaces: {},
      cgroupParent: plan.cgroupParent,
      files: {},
      ips: [],
      uidMappings: plan.uidMappings,
      gidMappings: plan.gidMappings,
      dir,
      creating: true,
    };
    const log = this.log.child({ pod: id });
    try {
      await this.locks.run(id, async () => {
        /**
         * One setup step, then what must survive a crash right after it: 'disk' = the record (before
         * anything a reboot would not clear, i.e. CNI ADD), 'copy' = the copy in the pod dir (what a
         * start-up needs to release things outside that dir: cgroup, CNI result, init process), 'none' =
         * nothing new outside the dir (whatever is mounted below it is found and undone anyway).
         */
        const step = async (what: string, persist: 'disk' | 'copy' | 'none', fn: () => Promise<void>) => {
          if (req.signal?.aborted) throw cancelled('RunPodSandbox cancelled by the client; undone', { pod: id });
          const started = performance.now();
          try {
            await fn();
          } catch (err) {
            throw err instanceof Error && 'kind' in err ? err : internal(`pod setup failed at ${what}: ${errorMessage(err)}`, { pod: id }, err);
          }
          const done = performance.now();
          if (persist === 'disk') await this.save(pod);
          else if (persist === 'copy') await this.saveCopy(pod);
          log.debug({ step: what, ms: Math.round(done - started), saveMs: Math.round(performance.now() - done) }, 'pod setup step');
        };
        await step('record', 'none', async () => mkdir(dir, { recursive: true, mode: 0o711 }).then(() => undefined));
        if (this.config.cgroupDriver === 'cgroupfs') {
          await step('cgroup', 'copy', async () => {
            pod.cgroupDirs = await createCgroup(plan.cgroupParent);
            // Only a cgroup skiff made is capped here; an existing parent (kubelet's) has its own limits.
            await applyCgroupLimits(pod.cgroupDirs, plan.limits);
          });
        }
        await step('namespaces', 'none', () => this.makeNamespaces(pod, plan));
        await step('shm', 'none', async () => {
          if (plan.hostIpc) pod.files.shm = '/dev/shm';
          else {
            await mountTmpfs(join(dir, 'shm'), SHM_OPTIONS);
            pod.files.shm = join(dir, 'shm');
          }
        });
        if (network) {
          // Persisted before ADD: a crash in the middle of ADD still gets its DEL at recovery.
          await step('cni-record', 'disk', async () => void (pod.cni = { network, attached: true }));
          await step('cni-add', 'copy', async () => {
            pod.cniResult = await this.cni.add(network, this.attachment(pod, plan));
            pod.ips = podIpsFromResult(pod.cniResult);
          });
        }
        await step('sysctls', 'none', () => applySysctls(plan.sysctls, pod.namespaces));
        if (plan.podPid) {
          await step('pid-init', 'copy', async () => {
            const init = await startPidInit(join(dir, 'ns'), { net: pod.namespaces.net, ipc: pod.namespaces.ipc, uts: pod.namespaces.uts, user: pod.namespaces.user }, catatonit!);
            Object.assign(pod.namespaces, { pid: init.file, pidInitPid: init.pid, pidInitStartTime: init.startTime });
          });
        }
        await step('files', 'none', async () => {
          const files = await writePodFiles(dir, { hostname: plan.hostname, hostNetwork: plan.hostNetwork, ips: pod.ips, dns: req.config.dns_config });
          Object.assign(pod.files, files);
        });
        if (req.signal?.aborted) throw cancelled('RunPodSandbox cancelled by the client; undone', { pod: id });
        pod.state = 'ready';
        delete pod.creating;
        await this.save(pod);
        this.pods.set(id, pod);
      });
      log.info({ name: req.config.metadata!.name, ips: pod.ips }, 'pod sandbox ready');
      return pod;
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'pod sandbox setup failed; undoing it');
      await this.locks.run(id, () => this.destroy(pod, log));
      log.info('pod sandbox setup undone');
      throw err;
    }
  }

  /**
   * Writes the record, and a copy into the pod's runtime dir: should the record ever be lost or damaged,
   * start-up still finds in the copy what the pod holds (network, cgroup, init) and releases it.
   */
  private async save(pod: PodRecord): Promise<void> {
    await this.store.save(pod.id, pod);
    await this.saveCopy(pod);
  }

  private async saveCopy(pod: PodRecord): Promise<void> {
    // No dir (gone with a reboot's tmpfs): nothing there to release later either, and no copy to keep.
    if (pod.dir && (await pathExists(pod.dir))) await writeJsonAtomic(join(pod.dir, RECORD_COPY), pod);
  }

  /** The copy of a record in its pod dir, when it is whole and belongs there. */
  private async readCopy(dir: string, id: string): Promise<PodRecord | undefined> {
    try {
      const copy = validatePodRecord(JSON.parse(await readFile(join(dir, RECORD_COPY), 'utf8')));
      return copy.id === id && copy.dir === dir ? copy : undefined;
    } catch {
      return undefined;
    }
  }

  private async makeNamespaces(pod: PodRecord, plan: PodPlan): Promise<void> {
    const kinds = [...(plan.hostNetwork ? [] : (['net', 'uts'] as const)), ...(plan.hostIpc ? [] : (['ipc'] as const))];
    const userns = plan.uidMappings && plan.gidMappings ? { uidMappings: plan.uidMappings, gidMappings: plan.gidMappings } : undefined;
    const pinned = await pinNamespaces({ dir: join(pod.dir!, 'ns'), kinds, hostname: plan.hostname, userns });
    Object.assign(pod.namespaces, Object.fromEntries(Object.entries(pinned).filter(([, v]) => v !== undefined)));
  }

  /** The plan of a pod's config under this daemon's cgroup settings (pure; recomputed where needed). */
  private plan(config: PodRecord['config'], podId: string): PodPlan {
    return planPod(config, { cgroupDriver: this.config.cgroupDriver, defaultCgroupParent: this.config.cgroupParent, podId });
  }

  private attachment(pod: PodRecord, plan?: PodPlan): CniAttachment {
    return {
      containerId: pod.id,
      netns: pod.namespaces.net ?? '',
      ifName: 'eth0',
      args: plan?.cniArgs ?? {},
      capabilityArgs: { portMappings: plan?.portMappings, bandwidth: plan?.bandwidth },
    };
  }

  /**
   * Releases what a pod holds on the machine except its cgroup and dir: init, network (CNI DEL with the
   * persisted list and result), namespace pins, shm. Idempotent; each step tolerates "already gone".
   * Returns the problems met (empty = clean).
   */
  private async release(pod: PodRecord): Promise<string[]> {
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${errorMessage(err)}`);
      }
    };
    const ns = pod.namespaces;
    if (ns.pidInitPid !== undefined && ns.pidInitStartTime !== undefined) await attempt('pod init', () => stopPidInit(ns.pidInitPid!, ns.pidInitStartTime!));
    if (pod.cni?.attached) {
      await attempt('cni del', async () => {
        // The plan's capability args matter for DEL too (portmap removes its rules by them).
        const plan = this.plan(pod.config, pod.id);
        const netns = ns.net !== undefined && (await isPinned(ns.net)) ? ns.net : '';
        const failures = await this.cni.del(pod.cni!.network, { ...this.attachment(pod, plan), netns }, pod.cniResult);
        if (failures.length > 0) throw internal(failures.join('; '), { pod: pod.id });
        pod.cni!.attached = false;
      });
    }
    for (const kind of ['pid', 'net', 'ipc', 'uts', 'user'] as const) {
      const file = ns[kind];
      // While DEL has not succeeded the netns stays pinned: the retry gives the plugins the same namespace.
      if (kind === 'net' && pod.cni?.attached) continue;
      if (file !== undefined) await attempt(`unpin ${kind}`, () => unpinNamespace(file));
    }
    if (pod.files.shm && pod.files.shm !== '/dev/shm') await attempt('shm', () => unmountAll(pod.files.shm!));
    return problems;
  }

  /**
   * Everything release does, then the pod's containers, cgroup, dir and record. Lenient (undoing a failed
   * run, start-up recovery): never throws. Strict (RemovePodSandbox): when CNI DEL or unpinning failed the
   * record is kept (NOTREADY) and an INTERNAL error names the step, so kubelet retries instead of the IP
   * lease and port mappings leaking with nothing left to release them.
   */
  private async destroy(pod: PodRecord, log: Logger, opts: { strict?: boolean } = {}): Promise<void> {
    const problems = await this.release(pod);
    const blocking = problems.filter((p) => p.startsWith('cni del') || p.startsWith('unpin '));
    if (opts.strict && blocking.length > 0) {
      pod.state = 'notready';
      await this.save(pod);
      throw internal(`removing pod sandbox: ${blocking.join('; ')}; the pod is kept until a retry succeeds`, { pod: pod.id });
    }
    try {
      await this.children.removeAll(pod);
    } catch (err) {
      problems.push(`containers: ${errorMessage(err)}`);
    }
    try {
      if (pod.cgroupDirs) await removeCgroupDirs(pod.cgroupDirs);
    } catch (err) {
      problems.push(`cgroup: ${errorMessage(err)}`);
    }
    if (pod.dir) {
      // Anything still mounted below the dir (a pin we did not record yet) goes first: rm must not cross mounts.
      for (const m of (await mountsUnder(pod.dir)).reverse()) await unmountAll(m).catch(() => undefined);
      await rm(pod.dir, { recursive: true, force: true }).catch((err: unknown) => problems.push(`dir: ${errorMessage(err)}`));
    }
    await this.store.remove(pod.id);
    this.pods.delete(pod.id);
    if (this.names.get(nameKey(pod.config)) === pod.id) this.names.delete(nameKey(pod.config));
    if (problems.length > 0) log.warn({ problems }, 'pod removed; some resources could not be released cleanly');
  }

  /** StopPodSandbox: idempotent; a pod that does not exist (any more) is fine. */
  async stop(idOrPrefix: string): Promise<void> {
    const found = this.find(idOrPrefix);
    if (!found) return;
    await this.locks.run(found.id, async () => {
      const pod = this.pods.get(found.id);
      if (!pod) return; // removed while we waited
      await this.children.stopAll(pod);
      const problems = await this.release(pod);
      pod.state = 'notready';
      await this.save(pod);
      if (problems.length > 0) throw internal(`stopping pod sandbox: ${problems.join('; ')}`, { pod: pod.id });
    });
  }

  /** RemovePodSandbox: removes containers first, then everything of the pod. Idempotent. */
  async remove(idOrPrefix: string): Promise<void> {
    const found = this.find(idOrPrefix);
    if (!found) return;
    await this.locks.run(found.id, async () => {
      const pod = this.pods.get(found.id);
      if (!pod) return;
      await this.children.removeAll(pod);
      await this.destroy(pod, this.log.child({ pod: pod.id }), { strict: true });
    });
  }

  /**
   * CNI CHECK of a ready pod's network: 'ok', why it was not run, or "CNI CHECK failed …" with the
   * plugin's words. Never throws for a failed check: the answer is the result.
   */
  async checkNetwork(idOrPrefix: string): Promise<string> {
    const pod = this.get(idOrPrefix);
    if (pod.state !== 'ready') return 'not run: the pod is not ready';
    if (!pod.cni?.attached) return 'not run: the pod has no CNI network';
    const plan = this.plan(pod.config, pod.id);
    try {
      const ran = await this.cni.check(pod.cni.network, this.attachment(pod, plan), pod.cniResult);
      if (ran) return 'ok';
      return pod.cni.network.disableCheck ? 'disabled by the network config' : `not supported by CNI spec ${pod.cni.network.cniVersion}`;
    } catch (err) {
      return errorMessage(err);
    }
  }

  /** After a restart: CHECK every ready pod's network once, in the background, and log what is broken. */
  private async checkAllNetworks(): Promise<void> {
    for (const pod of this.list()) {
      if (pod.state !== 'ready' || !pod.cni?.attached) continue;
      const result = await this.locks.run(pod.id, () => (this.pods.has(pod.id) ? this.checkNetwork(pod.id) : Promise.resolve('ok')));
      if (result.startsWith('CNI CHECK failed')) this.log.warn({ pod: pod.id, problem: result }, 'pod network is not what CNI ADD made');
    }
  }

  /**
   * Start-up: damaged records are moved aside by the store (logged); a pod caught half-built is undone;
   * a ready pod whose namespaces or init vanished (reboot, someone unmounted them) becomes NOTREADY with
   * its leftovers released; pod dirs without a record are unmounted and deleted.
   */
  private async recover(): Promise<void> {
    const { records, problems } = await this.store.loadAll();
    for (const p of problems) this.log.error({ file: p.file, err: p.error }, 'damaged pod record moved aside');
    for (const pod of records.values()) {
      const log = this.log.child({ pod: pod.id });
      try {
        if (pod.creating) {
          log.warn('pod was being created when the daemon stopped; undoing it');
          // the copy knows the steps done after the record was last written (cgroup dirs, init, CNI result)
          await this.destroy((pod.dir && (await this.readCopy(pod.dir, pod.id))) || pod, log);
          continue;
        }
        this.pods.set(pod.id, pod);
        this.names.set(nameKey(pod.config), pod.id);
        if (pod.state === 'ready' && !(await this.intact(pod))) {
          log.warn('pod namespaces are gone; marking it NOTREADY');
          await this.release(pod);
          pod.state = 'notready';
          await this.save(pod);
        }
      } catch (err) {
        log.error({ err: errorMessage(err) }, 'could not recover pod; it is left as found');
      }
    }
    let dirs: string[] = [];
    try {
      dirs = await readdir(this.podsDir);
    } catch {
      dirs = [];
    }
    for (const name of dirs) {
      if (this.pods.has(name)) continue;
      await this.cleanOrphanDir(name).catch((err: unknown) => this.log.error({ dir: join(this.podsDir, name), err: errorMessage(err) }, 'could not clean up a pod dir without a record'));
    }
  }

  /**
   * A pod dir without a (valid) record: its record was lost or damaged. The copy in the dir says what to
   * release; without one, CNI DEL with the current network still frees the IP lease and port mappings.
   */
  private async cleanOrphanDir(name: string): Promise<void> {
    const dir = join(this.podsDir, name);
    const log = this.log.child({ pod: name });
    const copy = await this.readCopy(dir, name);
    if (copy) {
      log.warn({ dir }, 'pod dir without a record; releasing the pod from the copy in its dir');
      await this.destroy(copy, log);
      return;
    }
    log.warn({ dir }, 'pod dir without a record or copy; releasing its network and deleting it');
    const network = /^[0-9a-f]{64}$/.test(name) ? await loadCniNetwork(this.config.cni.confDir).catch(() => undefined) : undefined;
    if (network) {
      const netns = join(dir, 'ns', 'net');
      const att = { containerId: name, netns: (await isPinned(netns)) ? netns : '', ifName: 'eth0', args: {}, capabilityArgs: {} };
      const failures = await this.cni.del(network, att, undefined);
      if (failures.length > 0) log.warn({ failures }, 'CNI DEL of an orphaned pod failed');
    }
    for (const m of (await mountsUnder(dir)).reverse()) await unmountAll(m).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }

  private async intact(pod: PodRecord): Promise<boolean> {
    const ns = pod.namespaces;
    for (const file of [ns.net, ns.ipc, ns.uts, ns.pid, ns.user]) if (file !== undefined && !(await isPinned(file))) return false;
    if (ns.pidInitPid !== undefined && ns.pidInitStartTime !== undefined && !(await pidInitAlive(ns.pidInitPid, ns.pidInitStartTime))) return false;
    return true;
  }
}
