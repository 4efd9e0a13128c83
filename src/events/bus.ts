// One bus for lifecycle changes: pod and container code publish, GetContainerEvents subscribers and
// metrics listen. Publishing never blocks: each subscriber has a bounded queue (see subscribe).
export type ContainerEventType = 'CONTAINER_CREATED_EVENT' | 'CONTAINER_STARTED_EVENT' | 'CONTAINER_STOPPED_EVENT' | 'CONTAINER_DELETED_EVENT';

export interface LifecycleEvent {
  type: ContainerEventType;
  containerId: string;
  podId: string;
  /** Unix time in nanoseconds (decimal string). */
  createdAt: string;
}

export type Listener = (event: LifecycleEvent) => void;

export class EventBus {
  private readonly listeners = new Set<Listener>();

  publish(event: LifecycleEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch {
        // a faulty listener must not break the state change that published
      }
    }
  }

  /** Returns an unsubscribe function. Listeners must not block: queue and return. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

let lastNanos = 0n;

/**
 * Unix time in nanoseconds, strictly increasing within the process: kubelet's evented PLEG drops an
 * update whose timestamp is not newer than the one it cached, so two calls in one millisecond must differ.
 */
export function nowNanos(): string {
  const wall = BigInt(Date.now()) * 1_000_000n;
  lastNanos = wall > lastNanos ? wall : lastNanos + 1n;
  return lastNanos.toString();
}
