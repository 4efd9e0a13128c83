// Every CRI service module, in one list: adding an rpc group means adding one line here.
import type { DaemonContext } from '../daemon/context.js';
import { mergeHandlers, type CriHandlers } from './server.js';
import { runtimeInfoService } from './runtime-info.js';
import { imageService } from './image-service.js';
import { podService } from './pod-service.js';
import { eventsService } from './events-service.js';
import { statsService } from './stats-service.js';
import { streamService } from './stream-service.js';
import { containerService } from './container-service.js';

export function criHandlers(ctx: DaemonContext): CriHandlers {
  return mergeHandlers([
    runtimeInfoService(ctx),
    imageService(ctx),
    podService(ctx),
    eventsService(ctx),
    statsService(ctx),
    streamService(ctx),
    containerService(ctx),
  ]);
}
