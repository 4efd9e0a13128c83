// The CRI log file format (`<RFC3339Nano> <stdout|stderr> <P|F> <text>`), and completing a log that
// Debian's conmon 2.1.6 leaves open: output without a trailing newline ends in a `P` record and never
// gets its `F`, so a reader would wait for the rest of a line that will never come. Once the container
// has exited we append the missing `F` (empty text) per stream. Idempotent.
import { open } from 'node:fs/promises';
import { errnoCode } from '../errors.js';

export type LogStream = 'stdout' | 'stderr';

/** How much of the file's end we look at for each stream's last record. */
const TAIL_BYTES = 256 * 1024;

/** `2026-12-04T07:06:08.193836380+00:00`, the form conmon writes (nanoseconds, numeric offset). */
export function criTimestamp(ms = Date.now(), subMsNanos = Number(process.hrtime.bigint() % 1_000_000n)): string {
  const d = new Date(ms);
  const base = d.toISOString().slice(0, 19);
  const nanos = String((ms % 1000) * 1_000_000 + subMsNanos).padStart(9, '0');
  return `${base}.${nanos}+00:00`;
}

export interface CriLogRecord {
  time: string;
  stream: LogStream;
  partial: boolean;
  text: string;
}

/** Parses one log line (without its newline); undefined for anything that is not a record. */
export function parseCriLogLine(line: string): CriLogRecord | undefined {
  const a = line.indexOf(' ');
  if (a < 0) return undefined;
  const b = line.indexOf(' ', a + 1);
  if (b < 0) return undefined;
  const stream = line.slice(a + 1, b);
  if (stream !== 'stdout' && stream !== 'stderr') return undefined;
  const c = line.indexOf(' ', b + 1);
  const tag = c < 0 ? line.slice(b + 1) : line.slice(b + 1, c);
  if (tag !== 'P' && tag !== 'F') return undefined;
  return { time: line.slice(0, a), stream, partial: tag === 'P', text: c < 0 ? '' : line.slice(c + 1) };
}

/** The streams whose last record in `tail` is partial (the start of `tail` may be a cut line: skipped). */
export function streamsLeftPartial(tail: string, startsAtFileStart: boolean): LogStream[] {
  const lines = tail.split('\n');
  if (!startsAtFileStart) lines.shift();
  const last = new Map<LogStream, boolean>();
  for (const line of lines) {
    const r = parseCriLogLine(line);
    if (r) last.set(r.stream, r.partial);
  }
  return (['stdout', 'stderr'] as const).filter((s) => last.get(s) === true);
}

/** Appends the missing final `F` record of each stream left partial. Returns the streams completed. */
export async function completeCriLog(path: string, now = Date.now()): Promise<LogStream[]> {
  let fh;
  try {
    fh = await open(path, 'r+');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size === 0) return [];
    const start = Math.max(0, size - TAIL_BYTES);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const streams = streamsLeftPartial(buf.toString('utf8'), start === 0);
    if (streams.length === 0) return [];
    // A P record always ends in '\n' in conmon's output; be safe if the file was cut mid-line.
    const sep = buf[buf.length - 1] === 0x0a ? '' : '\n';
    const text = sep + streams.map((s) => `${criTimestamp(now)} ${s} F \n`).join('');
    await fh.write(text, size);
    return streams;
  } finally {
    await fh.close();
  }
}
