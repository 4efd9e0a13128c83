// Fan-out with a bounded buffer per subscriber, so a slow reader never slows the runtime down.
//
// Policy for a subscriber that falls behind: when its buffer is full, the subscription ends with
// reason 'overflow' (GetContainerEvents then closes the stream with RESOURCE_EXHAUSTED). Dropping
// events silently would leave the kubelet's evented PLEG with a wrong picture and no way to know it;
// ending the stream makes the kubelet fall back to relisting and reconnect, which repairs its view.
// Publishing is O(subscribers), synchronous and never waits.

export type EndReason = 'closed' | 'overflow';

export class Subscription<T> {
  private readonly queue: T[] = [];
  private waiter?: (r: IteratorResult<T, undefined>) => void;
  private ended?: EndReason;
  private endedPromise?: Promise<EndReason>;
  private resolveEnded?: (r: EndReason) => void;

  constructor(
    readonly limit: number,
    private readonly detach: (s: Subscription<T>) => void,
  ) {}

  /** Why the subscription ended, or undefined while it is live. */
  get endReason(): EndReason | undefined {
    return this.ended;
  }

  get buffered(): number {
    return this.queue.length;
  }

  /** Resolves when the subscription ends (closed, or overflowed while the reader was busy). */
  whenEnded(): Promise<EndReason> {
    // One shared promise: a stream that waits on it at every backpressure pause must not pile up waiters.
    this.endedPromise ??= this.ended ? Promise.resolve(this.ended) : new Promise((r) => (this.resolveEnded = r));
    return this.endedPromise;
  }

  /** Called by the broadcaster; never blocks. */
  push(item: T): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: item, done: false });
      return;
    }
    if (this.queue.length >= this.limit) {
      this.end('overflow');
      return;
    }
    this.queue.push(item);
  }

  /** The next item; done once the subscription has ended and its buffer is drained (overflow: at once). */
  next(): Promise<IteratorResult<T, undefined>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift()!, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T, undefined> {
    return { next: () => this.next() };
  }

  close(): void {
    this.end('closed');
  }

  private end(reason: EndReason): void {
    if (this.ended) return;
    this.ended = reason;
    // A subscriber that overflowed has lost events: what is buffered is no longer a faithful sequence.
    if (reason === 'overflow') this.queue.length = 0;
    this.detach(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.({ value: undefined, done: true });
    this.resolveEnded?.(reason);
  }
}

export class Broadcaster<T> {
  private readonly subs = new Set<Subscription<T>>();

  subscribe(limit: number): Subscription<T> {
    const s = new Subscription<T>(limit, (x) => this.subs.delete(x));
    this.subs.add(s);
    return s;
  }

  publish(item: T): void {
    for (const s of [...this.subs]) s.push(item);
  }

  get subscribers(): number {
    return this.subs.size;
  }

  closeAll(): void {
    for (const s of [...this.subs]) s.close();
  }
}
