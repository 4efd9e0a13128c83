// Long synchronous loops (a layer's thousands of entries) give the event loop a turn now and then, so gRPC
// calls are answered while they run.
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Gives the event loop a turn every few hundred steps or every 10 ms, whichever comes first: a chunk in
 * memory can hold a thousand entries, and some entries (deep paths) cost far more than others.
 */
export class Turns {
  private steps = 0;
  private since = performance.now();

  /** `signal` is checked at every step: a cancelled unpack stops within one. */
  constructor(private readonly signal?: AbortSignal) {}

  async step(): Promise<void> {
    this.signal?.throwIfAborted();
    if (++this.steps < 256 && performance.now() - this.since < 10) return;
    await nextTurn();
    this.steps = 0;
    this.since = performance.now();
  }
}
