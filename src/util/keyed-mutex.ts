// Serializes work per object ID (a pod, a container, a blob digest): state transitions of one object
// never interleave, different objects proceed in parallel.
import { untilAborted } from './abort.js';

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs fn once the work queued before it on `key` is done; `signal` gives up waiting (fn never runs). */
  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    const done = () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
    try {
      await untilAborted(prev, signal);
    } catch (err) {
      // those queued after this one still wait for the ones before it
      void prev.then(done);
      throw err;
    }
    try {
      return await fn();
    } finally {
      done();
    }
  }
}
