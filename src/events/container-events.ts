// The GetContainerEvents feed: lifecycle events from the bus, each completed with the pod's status and
// its containers' statuses as PodSandboxStatus would report them at that moment, then fanned out to
// every connected subscriber (see subscription.ts for the slow-subscriber policy).
import type { EventBus, LifecycleEvent } from './bus.js';
import { Broadcaster, type Subscription } from './subscription.js';
import type { ContainerEventResponse } from '../gen/runtime/v1/ContainerEventResponse.js';
import type { PodSandboxStatus } from '../gen/runtime/v1/PodSandboxStatus.js';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus.js';

/** What the pods/containers modules tell us about a pod right now (undefined: the pod is gone). */
export interface PodStatusSnapshot {
  status: PodSandboxStatus;
  containers: ContainerStatus[];
}

/**
 * Provided by the pods module. It should take its snapshot synchronously (from in-memory records) before
 * its first await, so the statuses describe the moment of the event, not of a later one.
 */
export interface PodStatusProvider {
  podStatusSnapshot(podId: string): Promise<PodStatusSnapshot | undefined> | PodStatusSnapshot | undefined;
}

/** Events a subscriber may have buffered before it counts as stuck (a kubelet reads them at once). */
export const DEFAULT_SUBSCRIBER_BUFFER = 1024;

export class ContainerEventFeed {
  private readonly broadcaster = new Broadcaster<ContainerEventResponse>();
  /** Completed events are delivered in publish order even though status lookups are async. */
  private tail: Promise<void> = Promise.resolve();
  private provider?: PodStatusProvider;
  private readonly unsubscribe: () => void;

  constructor(
    bus: EventBus,
    private readonly onError: (err: unknown, event: LifecycleEvent) => void = () => undefined,
    private readonly bufferLimit = DEFAULT_SUBSCRIBER_BUFFER,
  ) {
    this.unsubscribe = bus.subscribe((e) => this.accept(e));
  }

  /** Set once the pods module exists (the daemon wires it); until then events carry no statuses. */
  setProvider(provider: PodStatusProvider): void {
    this.provider = provider;
  }

  subscribe(limit = this.bufferLimit): Subscription<ContainerEventResponse> {
    return this.broadcaster.subscribe(limit);
  }

  get subscribers(): number {
    return this.broadcaster.subscribers;
  }

  /** Resolves once every event published so far has been delivered to the subscribers' buffers. */
  flushed(): Promise<void> {
    return this.tail;
  }

  close(): void {
    this.unsubscribe();
    this.broadcaster.closeAll();
  }

  private accept(event: LifecycleEvent): void {
    if (this.broadcaster.subscribers === 0) return;
    // Start the lookup now (the snapshot moment), deliver in order.
    let snapshot: ReturnType<PodStatusProvider['podStatusSnapshot']>;
    try {
      snapshot = this.provider?.podStatusSnapshot(event.podId);
    } catch (err) {
      this.onError(err, event);
      snapshot = undefined;
    }
    const ready = Promise.resolve(snapshot).catch((err: unknown) => {
      this.onError(err, event);
      return undefined;
    });
    this.tail = this.tail.then(async () => {
      const s = await ready;
      this.broadcaster.publish({
        container_id: event.containerId,
        container_event_type: event.type,
        created_at: event.createdAt,
        pod_sandbox_status: s?.status ?? null,
        containers_statuses: s?.containers ?? [],
      });
    });
  }
}
