// What the CRI services are given: configuration and the subsystems that do the work. Built once by
// src/daemon/daemon.ts; src/cri modules only read it.
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import type { NetworkSettings } from '../net/settings.js';
import type { EventBus } from '../events/bus.js';
import type { ImageService } from '../image/images.js';
import type { PodManager } from '../sandbox/manager.js';
import type { ContainerEventFeed } from '../events/container-events.js';
import type { StatsService } from '../stats/service.js';
import type { CdiRegistry } from '../cdi/registry.js';
import type { IdmapDetector } from '../oci/idmap.js';
import type { ContainerManager } from '../containers/manager.js';
import type { StreamingServer } from '../stream/server.js';

export interface DaemonContext {
  config: SkiffConfig;
  log: Logger;
  handlers: RuntimeHandlers;
  network: NetworkSettings;
  events: EventBus;
  /** Images per runtime handler, and container root filesystems (src/image/images.ts). */
  images: ImageService;
  /** pod sandboxes: lifecycle, index (get/list), hooks for the containers module (setChildren) */
  pods: PodManager;
  /** GetContainerEvents subscribers: bus events completed with pod/container statuses. */
  containerEvents: ContainerEventFeed;
  /** Stats and metrics sampling (cgroups, netns, writable layers). */
  stats: StatsService;
  /** CDI spec files, resolved into OCI edits at CreateContainer. */
  cdi: CdiRegistry;
  /** Whether each runtime handler can do idmapped mounts. */
  idmap: IdmapDetector;
  /** containers: lifecycle, exec, logs, exit watching and restart recovery (src/containers) */
  containers: ContainerManager;
  /** The exec/attach/port-forward HTTP server: rpcs park requests there and return its URLs. */
  streaming: StreamingServer;
  /** Closed on shutdown, in reverse order of registration. */
  onShutdown(fn: () => Promise<void> | void): void;
}
