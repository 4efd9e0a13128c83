// What the CRI services are given: configuration and the subsystems that do the work. Built once by
// src/daemon/daemon.ts; src/cri modules only read it.
import type { SkiffConfig } from '../config/config.js';
import type { Logger } from '../log.js';
import type { RuntimeHandlers } from '../oci/runtime-handlers.js';
import type { NetworkSettings } from '../net/settings.js';
import type { EventBus } from '../events/bus.js';
import type { ImageService } from '../image/images.js';
import type { PodManager } from '../sandbox/manager.js';

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
  /** Closed on shutdown, in reverse order of registration. */
  onShutdown(fn: () => Promise<void> | void): void;
}
