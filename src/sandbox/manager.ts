// The pod manager: the life of a pod sandbox (run, stop, remove), its index, and restart recovery.
// Every state change of a pod runs under that pod's mutex and ends in an atomically written record.
// Teardown is one idempotent routine used by stop, remove, a failed run and recovery alike.
import { randomBytes } from 'node:crypto';
import { mkdir, rm, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig.js';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus.js';
import type { PodRecord } from '../store/records.js';
import { RecordStore } from '../store/record-store.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { lookPath } from '../util/which.js';
import { nowNanos } from '../events/bus.js';
import { CniRunner, loadCniNetwork, podIpsFromResult, type CniAttachment } from '../net/cni.js';
import { planPod, type PodPlan } from './plan.js';
import { pinNamespaces, unpinNamespace, startPidInit, stopPidInit, isPinned, pidInitAlive } from './namespaces.js';
import { ensurePrivateMount, mountTmpfs, unmountAll, mountsUnder } from './mounts.js';
import { createCgroup, removeCgroupDirs } from './cgroups.js';
import { applySysctls } from './sysctls.js';
import { writePodFiles } from './files.js';
import { validatePodRecord } from './record-check.js';
import { alreadyExists, cancelled, failedPrecondition, internal, invalidArgument, notFound, errorMessage } from '../errors.js';

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
    if (idOrPrefix === '') throw invalidArgument('pod sandbox id is required');
    const exact = this.pods.get(idOrPrefix);
    if (exact) return exact;
    const matches = [...this.pods.values()].filter((p) => p.id.startsWith(idOrPrefix));
    if (matches.length > 1) throw invalidArgument(`pod sandbox id prefix "${idOrPrefix}" is ambiguous`, { pod: idOrPrefix });
    return matches[0];
  }

  list(): PodRecord[] {
    return [...this.pods.values()];
  }

  /** Runs `fn` under the pod's mutex (the containers module uses it to order its work against stop/remove). */
  withLock<T>(podId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(podId, fn);
  }

  async containerStatuses(pod: PodRecord): Promise<ContainerStatus[]> {
    return this.children.statuses(pod);
  }

  async run(req: RunPodRequest): Promise<PodRecord> {
    const id = randomBytes(32).toString('hex');
    const handler = this.handlers.config_(req.handler).name;
    const plan = planPod(req.config, { cgroupDriver: this.config.cgroupDriver, defaultCgroupParent: this.config.cgroupParent, podId: id });
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
        const step = async (what: string, fn: () => Promise<void>) => {
          if (req.signal?.aborted) throw cancelled('RunPodSandbox cancelled by the client; undone', { pod: id });
          try {
            await fn();
          } catch (err) {
            throw err instanceof Error && 'kind' in err ? err : internal(`pod setup failed at ${what}: ${errorMessage(err)}`, { pod: id }, err);
          }
          await this.store.save(id, pod);
        };
        await step('record', async () => mkdir(dir, { recursive: true, mode: 0o711 }).then(() => undefined));
        if (this.config.cgroupDriver === 'cgroupfs') await step('cgroup', async () => void (pod.cgroupDirs = await createCgroup(plan.cgroupParent)));
        await step('namespaces', () => this.makeNamespaces(pod, plan));
        await step('shm', async () => {
          if (plan.hostIpc) pod.files.shm = '/dev/shm';
          else {
            await mountTmpfs(join(dir, 'shm'), SHM_OPTIONS);
            pod.files.shm = join(dir, 'shm');
          }
        });
        if (network) {
          // Persisted before ADD: a crash in the middle of ADD still gets its DEL at recovery.
          await step('cni-record', async () => void (pod.cni = { network, attached: true }));
          await step('cni-add', async () => {
            pod.cniResult = await this.cni.add(network, this.attachment(pod, plan));
            pod.ips = podIpsFromResult(pod.cniResult);
          });
        }
        await step('sysctls', () => applySysctls(plan.sysctls, pod.namespaces));
        if (plan.podPid) {
          await step('pid-init', async () => {
            const init = await startPidInit(join(dir, 'ns'), { net: pod.namespaces.net, ipc: pod.namespaces.ipc, uts: pod.namespaces.uts }, catatonit!);
            Object.assign(pod.namespaces, { pid: init.file, pidInitPid: init.pid, pidInitStartTime: init.startTime });
          });
        }
        await step('files', async () => {
          const files = await writePodFiles(dir, { hostname: plan.hostname, hostNetwork: plan.hostNetwork, ips: pod.ips, dns: req.config.dns_config });
          Object.assign(pod.files, files);
        });
        if (req.signal?.aborted) throw cancelled('RunPodSandbox cancelled by the client; undone', { pod: id });
        pod.state = 'ready';
        delete pod.creating;
        await this.store.save(id, pod);
        this.pods.set(id, pod);
      });
      log.info({ name: req.config.metadata!.name, ips: pod.ips }, 'pod sandbox ready');
      return pod;
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'pod sandbox setup failed; undoing it');
      await this.locks.run(id, () => this.destroy(pod, log));
      throw err;
    }
  }

  private async makeNamespaces(pod: PodRecord, plan: PodPlan): Promise<void> {
    const kinds = [...(plan.hostNetwork ? [] : (['net', 'uts'] as const)), ...(plan.hostIpc ? [] : (['ipc'] as const))];
    const pinned = await pinNamespaces({ dir: join(pod.dir!, 'ns'), kinds, hostname: plan.hostname });
    Object.assign(pod.namespaces, Object.fromEntries(Object.entries(pinned).filter(([, v]) => v !== undefined)));
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
        const plan = planPod(pod.config, { cgroupDriver: this.config.cgroupDriver, defaultCgroupParent: this.config.cgroupParent, podId: pod.id });
        const netns = ns.net !== undefined && (await isPinned(ns.net)) ? ns.net : '';
        const failures = await this.cni.del(pod.cni!.network, { ...this.attachment(pod, plan), netns }, pod.cniResult);
        if (failures.length > 0) throw internal(failures.join('; '), { pod: pod.id });
        pod.cni!.attached = false;
      });
    }
    for (const kind of ['pid', 'net', 'ipc', 'uts'] as const) {
      const file = ns[kind];
      if (file !== undefined) await attempt(`unpin ${kind}`, () => unpinNamespace(file));
    }
    if (pod.files.shm && pod.files.shm !== '/dev/shm') await attempt('shm', () => unmountAll(pod.files.shm!));
    return problems;
  }

  /** Everything release does, then the pod's containers, cgroup, dir and record. Never throws. */
  private async destroy(pod: PodRecord, log: Logger): Promise<void> {
    const problems = await this.release(pod);
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
      await this.store.save(pod.id, pod);
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
      await this.destroy(pod, this.log.child({ pod: pod.id }));
    });
  }

  /** CNI CHECK of a ready pod: throws when its network is no longer what ADD made. */
  async checkNetwork(idOrPrefix: string): Promise<void> {
    const pod = this.get(idOrPrefix);
    if (!pod.cni?.attached || pod.state !== 'ready') return;
    const plan = planPod(pod.config, { cgroupDriver: this.config.cgroupDriver, defaultCgroupParent: this.config.cgroupParent, podId: pod.id });
    await this.cni.check(pod.cni.network, this.attachment(pod, plan), pod.cniResult);
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
          await this.destroy(pod, log);
          continue;
        }
        this.pods.set(pod.id, pod);
        this.names.set(nameKey(pod.config), pod.id);
        if (pod.state === 'ready' && !(await this.intact(pod))) {
          log.warn('pod namespaces are gone; marking it NOTREADY');
          await this.release(pod);
          pod.state = 'notready';
          await this.store.save(pod.id, pod);
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
      const dir = join(this.podsDir, name);
      this.log.warn({ dir }, 'pod dir without a record; cleaning it up');
      for (const m of (await mountsUnder(dir)).reverse()) await unmountAll(m).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  private async intact(pod: PodRecord): Promise<boolean> {
    const ns = pod.namespaces;
    for (const file of [ns.net, ns.ipc, ns.uts, ns.pid]) if (file !== undefined && !(await isPinned(file))) return false;
    if (ns.pidInitPid !== undefined && ns.pidInitStartTime !== undefined && !(await pidInitAlive(ns.pidInitPid, ns.pidInitStartTime))) return false;
    return true;
  }
}
