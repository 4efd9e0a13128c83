// `skiff daemon`: builds the subsystems, serves CRI on the unix socket, shuts down gracefully.
// Stopping the daemon never stops containers: they belong to their conmon processes.
import * as grpc from '@grpc/grpc-js';
import { mkdir } from 'node:fs/promises';
import type { SkiffConfig } from '../config/config.js';
import { createLogger, type Logger } from '../log.js';
import { createServer } from '../cri/server.js';
import { criHandlers } from '../cri/services.js';
import { RuntimeHandlers } from '../oci/runtime-handlers.js';
import { NetworkSettings } from '../net/settings.js';
import { EventBus } from '../events/bus.js';
import { ImageService } from '../image/images.js';
import { PodManager } from '../sandbox/manager.js';
import { ContainerEventFeed } from '../events/container-events.js';
import { StatsService } from '../stats/service.js';
import { CdiRegistry } from '../cdi/registry.js';
import { IdmapDetector } from '../oci/idmap.js';
import { k129SpecPreparer } from '../containers/k129-prepare.js';
import { ContainerManager } from '../containers/manager.js';
import { ConmonDriver } from '../oci/conmon-driver.js';
import { podSandboxStatus } from '../cri/pod-service.js';
import { join } from 'node:path';
import { startStreaming } from './streaming.js';
import { systemdRunning } from '../util/systemd.js';
import { claimSocketPath, restrictSocket } from './socket.js';
import type { DaemonContext } from './context.js';
import { failedPrecondition, errorMessage } from '../errors.js';
import { SKIFF_VERSION } from '../version.js';

/** How long in-flight calls get to finish after SIGTERM before the server is closed hard. */
const SHUTDOWN_GRACE_MS = 10_000;

export interface RunningDaemon {
  ctx: DaemonContext;
  /** Stops accepting calls, lets in-flight ones finish, closes subsystems. */
  shutdown(reason: string): Promise<void>;
}

async function buildContext(config: SkiffConfig, log: Logger): Promise<{ ctx: DaemonContext; closers: (() => Promise<void> | void)[] }> {
  const closers: (() => Promise<void> | void)[] = [];
  const network = new NetworkSettings(config.state);
  await network.load(log);
  const handlers = new RuntimeHandlers(config);
  const images = new ImageService(config, handlers, log);
  await images.init();
  closers.push(() => images.close());
  const events = new EventBus();
  const containerEvents = new ContainerEventFeed(events, (err, e) => log.warn({ err, container: e.containerId }, 'event status lookup failed'));
  closers.push(() => containerEvents.close());
  const pods = await PodManager.open(config, handlers, log);
  const driver = new ConmonDriver(handlers, {
    conmonPath: config.conmonPath,
    exitDir: join(config.state, 'exits'),
    socketDir: join(config.state, 'attach'),
    cgroupDriver: config.cgroupDriver,
  });
  const cdi = new CdiRegistry(config.cdi.specDirs);
  const idmap = new IdmapDetector();
  const prepareSpec = k129SpecPreparer({ cdi, idmap, handlers });
  const containers = await ContainerManager.open({ config, log, images, pods, events, driver, prepareSpec });
  closers.push(() => containers.close());
  containerEvents.setProvider({
    podStatusSnapshot: (podId) => {
      const pod = pods.find(podId);
      return pod ? { status: podSandboxStatus(pod), containers: containers.statuses(pod) } : undefined;
    },
  });
  // The backends look pods/containers up per request, when ctx exists.
  const streaming = await startStreaming(config, log, () => ctx);
  closers.push(() => streaming.close());
  const ctx: DaemonContext = {
    config,
    log,
    handlers,
    images,
    network,
    events,
    pods,
    containers,
    containerEvents,
    stats: new StatsService({ cgroupDriver: config.cgroupDriver, writableLayer: (id) => images.writableLayer(id) }),
    cdi,
    idmap,
    streaming: streaming.server,
    onShutdown: (fn) => closers.push(fn),
  };
  ctx.stats.setRecords({ pods: () => pods.list(), containers: () => containers.all() });
  return { ctx, closers };
}

function bind(server: grpc.Server, socket: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
}

export async function startDaemon(config: SkiffConfig): Promise<RunningDaemon> {
  const log = createLogger(config.logLevel);
  if (config.cgroupDriver === 'systemd' && !(await systemdRunning())) {
    throw failedPrecondition('cgroup_driver = "systemd" but systemd is not running on this host; use "cgroupfs"', {
      file: config.configFile,
    });
  }
  await mkdir(config.root, { recursive: true, mode: 0o711 });
  await mkdir(config.state, { recursive: true, mode: 0o711 });
  await claimSocketPath(config.socket);

  const { ctx, closers } = await buildContext(config, log);
  const server = createServer(criHandlers(ctx), log);
  await bind(server, config.socket);
  await restrictSocket(config.socket);
  log.info({ socket: config.socket, root: config.root, state: config.state, version: SKIFF_VERSION }, 'skiff daemon serving CRI');

  let stopping: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'shutting down: no new calls, waiting for in-flight ones');
      // Event streams never finish by themselves: end them first, or they would hold the grace period.
      ctx.containerEvents.close();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn('in-flight calls did not finish in time; closing connections');
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      for (const close of closers.reverse()) {
        try {
          await close();
        } catch (err) {
          log.error({ err: errorMessage(err) }, 'error while closing a subsystem');
        }
      }
      log.info('stopped');
    })();
    return stopping;
  };
  return { ctx, shutdown };
}
