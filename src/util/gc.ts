// Bounds the memory of data streaming through the daemon (blob downloads, layer unpacking).
// A streamed chunk is a large off-heap Buffer behind a tiny JS object. V8 frees the Buffer only when it
// collects that object, and tiny objects barely fill the young generation, so hundreds of MB streamed can
// leave tens of MB of dead Buffers waiting for the external-memory limit to force a GC. A minor GC (a
// scavenge of the young generation: about a millisecond) every few MB streamed keeps that bounded. A Buffer
// that was in flight across two scavenges (a stream waiting on the network or the disk) has moved to the old
// generation, where only a full collection frees it. So when Buffer memory has grown well past what the last
// full collection left, another is requested: V8 runs it as a separate task (`execution: 'async'`), a
// complete stop-the-world collection of a small heap (a few ms here), after the current stream callback
// rather than inside it. At most one is pending, and at most one per MAJOR_EVERY_BYTES streamed, so other
// users of Buffers (ExecSync output, concurrent pulls) cannot make every scavenge a full collection.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFn = (opts: { type: 'minor' | 'major'; execution: 'sync' | 'async' }) => Promise<void> | undefined;

let gcFn: GcFn | null | undefined;

function gc(): GcFn | null {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as GcFn;
    } catch {
      gcFn = null;
    }
  }
  return gcFn;
}

const EVERY_BYTES = 8 * 1024 * 1024;
/** Growth of Buffer memory over the lowest level since the last full collection that asks for another. */
const GROWTH_BYTES = 12 * 1024 * 1024;
/** Bytes streamed between two full collections, at least. */
const MAJOR_EVERY_BYTES = 32 * 1024 * 1024;

/** Counts bytes streamed by one thread; scavenges each time another EVERY_BYTES went through. */
export class StreamedBytes {
  private pending = 0;
  private sinceMajor = 0;
  private majorPending = false;
  /** Lowest Buffer memory seen since the last full collection ended. */
  private low = 0;

  add(n: number): void {
    this.pending += n;
    if (this.pending < EVERY_BYTES) return;
    this.sinceMajor += this.pending;
    this.pending = 0;
    const collect = gc();
    if (!collect) return;
    void collect({ type: 'minor', execution: 'sync' });
    const buffers = process.memoryUsage().arrayBuffers;
    this.low = Math.min(this.low, buffers);
    if (this.majorPending || this.sinceMajor < MAJOR_EVERY_BYTES || buffers < this.low + GROWTH_BYTES) return;
    this.majorPending = true;
    this.sinceMajor = 0;
    const settle = () => {
      this.majorPending = false;
      this.low = process.memoryUsage().arrayBuffers;
    };
    const done = collect({ type: 'major', execution: 'async' });
    if (done) void done.then(settle, settle);
    else settle();
  }
}

/**
 * undici's HTTP parser is WebAssembly. V8 first compiles it with its baseline compiler (Liftoff), then
 * recompiles the hot functions with its optimizing one in background threads, whose malloc arenas grew
 * the daemon by 30-40 MB at the start of every big download here; Liftoff code alone parsed a loopback
 * download as fast. The flag applies to wasm compiled after this call: call it before the first request.
 */
export function baselineWasmOnly(): void {
  try {
    setFlagsFromString('--liftoff-only');
  } catch {
    // an unknown flag on another V8: the default compilers then, nothing breaks
  }
}

/** The daemon's counter (a counter is per thread: each has its own heap to scavenge). */
export const streamed = new StreamedBytes();
