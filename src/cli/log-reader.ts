// Reading a container's CRI log file the way crictl and kubelet do: the file named by
// ContainerStatus.log_path holds `<RFC3339Nano> <stdout|stderr> <P|F> <text>` records; P records are the
// pieces of a line that was split (long lines, or output not yet ended by a newline) and are joined with
// the following records of the same stream up to the F that ends the line.
// The file is read as latin1, one character per byte, and printed back the same way: a container's output
// comes out byte for byte, as crictl prints it, whether or not it is UTF-8.
import { open, stat, type FileHandle } from 'node:fs/promises';
import { parseDuration } from './context.js';
// one record's format is shared with the runtime side (src/oci/cri-log.ts, which completes conmon's logs)
import { parseCriLogLine, type CriLogRecord, type LogStream } from '../oci/cri-log.js';

/** A whole line of output: the joined records, stamped with the time of its first record. */
export interface LogMessage {
  time: string;
  stream: LogStream;
  /** The line's bytes, one character per byte (latin1). */
  text: string;
  /** false when the line was still partial where the reading stopped (no F yet). */
  complete: boolean;
}

/** Joins P records per stream (stdout and stderr may interleave) until each one's F. */
export class LogJoiner {
  private readonly pending = new Map<LogStream, { time: string; parts: string[] }>();

  push(r: CriLogRecord): LogMessage | undefined {
    const p = this.pending.get(r.stream);
    if (r.partial) {
      if (p) p.parts.push(r.text);
      else this.pending.set(r.stream, { time: r.time, parts: [r.text] });
      return undefined;
    }
    this.pending.delete(r.stream);
    return p ? { time: p.time, stream: r.stream, text: p.parts.join('') + r.text, complete: true } : { time: r.time, stream: r.stream, text: r.text, complete: true };
  }

  /** The lines still waiting for their F, oldest first (the end of a log whose writer has not finished). */
  flush(): LogMessage[] {
    const out = [...this.pending.entries()].map(([stream, p]) => ({ time: p.time, stream, text: p.parts.join(''), complete: false }));
    this.pending.clear();
    return out.sort((a, b) => timeMs(a.time) - timeMs(b.time));
  }
}

/** Milliseconds since the epoch of an RFC 3339 time (nanoseconds are cut to ms); NaN if unparsable. */
export function timeMs(t: string): number {
  return Date.parse(t);
}

/**
 * `--since`: an RFC 3339 time (`2026-01-02T13:23:37Z`; no zone = UTC), a Unix time in seconds
 * (`1700000000` or `1700000000.5`), or a duration back from now (`42m`, `10s`, `1h`).
 */
export function parseSince(value: string, now = Date.now()): number {
  const v = value.trim();
  if (/^\d+(\.\d+)?(ms|s|m|h)$/.test(v)) return now - parseDuration(v);
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const withZone = /([zZ]|[+-]\d\d:?\d\d)$/.test(v) || !v.includes('T') ? v : `${v}Z`;
  const ms = Date.parse(withZone);
  if (Number.isNaN(ms)) throw new Error(`--since "${value}": expected a time (2026-01-02T13:23:37Z), Unix seconds, or a duration (42m)`);
  return ms;
}

export interface LogOptions {
  /** Only the last n lines (-1 = all). */
  tail: number;
  /** Only lines stamped at or after this time (ms since the epoch). */
  sinceMs?: number;
  timestamps: boolean;
}

/** Whole messages of a log text (the whole file, or what was appended), keeping the joiner's state. */
export function messagesOf(text: string, joiner: LogJoiner): LogMessage[] {
  const out: LogMessage[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const r = parseCriLogLine(line);
    if (!r) continue;
    const m = joiner.push(r);
    if (m) out.push(m);
  }
  return out;
}

/** --since and --tail applied to messages in file order. */
export function selectMessages(messages: LogMessage[], opts: Pick<LogOptions, 'tail' | 'sinceMs'>): LogMessage[] {
  const since = opts.sinceMs;
  const kept = since === undefined ? messages : messages.filter((m) => timeMs(m.time) >= since);
  return opts.tail >= 0 ? kept.slice(Math.max(0, kept.length - opts.tail)) : kept;
}

/** How a message is printed: its text, the newline only when the line was complete. */
export function formatMessage(m: LogMessage, timestamps: boolean): string {
  return `${timestamps ? `${m.time} ` : ''}${m.text}${m.complete ? '\n' : ''}`;
}

export interface LogSink {
  write(stream: LogStream, text: string): void;
}

/** Caps what is printed at `limit` bytes (--limit-bytes; -1 = no cap). */
export class LimitedSink implements LogSink {
  private left: number;
  constructor(
    private readonly inner: LogSink,
    limit: number,
  ) {
    this.left = limit < 0 ? Infinity : limit;
  }
  get exhausted(): boolean {
    return this.left <= 0;
  }
  write(stream: LogStream, text: string): void {
    if (this.left <= 0) return;
    const part = text.length <= this.left ? text : text.slice(0, this.left);
    this.left -= part.length;
    this.inner.write(stream, part);
  }
}

/** A reader that remembers where it stopped in the file, so follow mode can pick up what was appended. */
export class LogFile {
  private fh?: FileHandle;
  private ino = -1;
  private offset = 0;
  private carry = '';
  readonly joiner = new LogJoiner();

  constructor(readonly path: string) {}

  private async openFile(): Promise<boolean> {
    try {
      this.fh = await open(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    this.ino = (await this.fh.stat()).ino;
    this.offset = 0;
    this.carry = '';
    return true;
  }

  /** Reads everything appended since the last call; whole messages only (a cut last line waits). */
  async readMore(): Promise<LogMessage[]> {
    if (!this.fh && !(await this.openFile())) return [];
    const out: LogMessage[] = [];
    for (;;) {
      out.push(...(await this.drain()));
      // Rotation (the kubelet renames the file and asks for ReopenContainerLog) or truncation: the
      // old file is read to its end above, then the new one from its start.
      const cur = await stat(this.path).catch(() => undefined);
      const size = (await this.fh!.stat()).size;
      if (cur && cur.ino !== this.ino) {
        await this.close();
        if (!(await this.openFile())) return out;
        continue;
      }
      if (size < this.offset) {
        this.offset = 0;
        this.carry = '';
        continue;
      }
      return out;
    }
  }

  private async drain(): Promise<LogMessage[]> {
    const out: LogMessage[] = [];
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const { bytesRead } = await this.fh!.read(buf, 0, buf.length, this.offset);
      if (bytesRead === 0) return out;
      this.offset += bytesRead;
      const text = this.carry + buf.toString('latin1', 0, bytesRead);
      const nl = text.lastIndexOf('\n');
      this.carry = text.slice(nl + 1);
      if (nl >= 0) out.push(...messagesOf(text.slice(0, nl), this.joiner));
    }
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }
}
