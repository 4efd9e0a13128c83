// Bounds the memory of data streaming through the daemon (blob downloads, layer unpacking).
// A streamed chunk is a large off-heap Buffer behind a tiny JS object. V8 frees the Buffer only when it
// collects that object, and tiny objects barely fill the young generation, so hundreds of MB streamed can
// leave tens of MB of dead Buffers waiting for the external-memory limit to force a GC. A minor GC (a
// scavenge of the young generation: about a millisecond) every few MB streamed keeps that bounded. A Buffer
// that was in flight across two scavenges (a stream waiting on the network or the disk) has moved to the old
// generation, where only a full collection frees it: when a scavenge leaves much Buffer memory behind, a
// full one is started too, incrementally (async), so the event loop is not paused for it.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFn = (opts: { type: 'minor' | 'major'; execution: 'sync' | 'async' }) => void;

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
/** Buffer memory a scavenge may leave before a full collection is started (measured: pulls peaked ~30 MB). */
const OLD_BUFFERS_BYTES = 12 * 1024 * 1024;

/** Counts bytes streamed by one thread; scavenges each time another EVERY_BYTES went through. */
export class StreamedBytes {
  private pending = 0;

  add(n: number): void {
    this.pending += n;
    if (this.pending < EVERY_BYTES) return;
    this.pending = 0;
    const collect = gc();
    if (!collect) return;
    collect({ type: 'minor', execution: 'sync' });
    if (process.memoryUsage().arrayBuffers > OLD_BUFFERS_BYTES) collect({ type: 'major', execution: 'async' });
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
