// The client's CRI log reading: record parsing, joining P records, --tail/--since/--limit-bytes, and a
// reader that follows appends, rotation and truncation of a real file.
import { describe, it, expect, afterEach } from 'vitest';
import { appendFile, mkdtemp, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCriLogLine as parseLogRecord, type LogStream } from '../../src/oci/cri-log.js';
import {
  LogJoiner,
  messagesOf,
  selectMessages,
  formatMessage,
  parseSince,
  LimitedSink,
  LogFile,
} from '../../src/cli/log-reader.js';

const T1 = '2026-12-04T07:00:01.000000001+00:00';
const T2 = '2026-12-04T07:00:02.5Z';
const T3 = '2026-12-04T07:00:03.123456789Z';

describe('parseLogRecord', () => {
  it('reads time, stream, tag and text (text may hold spaces or be empty)', () => {
    expect(parseLogRecord(`${T1} stdout F hello  world `)).toEqual({ time: T1, stream: 'stdout', partial: false, text: 'hello  world ' });
    expect(parseLogRecord(`${T1} stderr P `)).toEqual({ time: T1, stream: 'stderr', partial: true, text: '' });
    expect(parseLogRecord(`${T1} stdout F`)).toEqual({ time: T1, stream: 'stdout', partial: false, text: '' });
  });
  it('rejects lines that are not records', () => {
    expect(parseLogRecord('')).toBeUndefined();
    expect(parseLogRecord('garbage')).toBeUndefined();
    expect(parseLogRecord(`${T1} stdin F x`)).toBeUndefined();
    expect(parseLogRecord(`${T1} stdout X x`)).toBeUndefined();
    expect(parseLogRecord(`${T1} stdout PF x`)).toBeUndefined();
  });
});

describe('joining records into lines', () => {
  it('joins P records up to the F of the same stream, with interleaved streams, stamped with the first time', () => {
    const text = [`${T1} stdout P aaa`, `${T2} stderr F err line`, `${T2} stdout P bbb`, `${T3} stdout F ccc`, `${T3} stdout F next`].join('\n');
    const msgs = messagesOf(text, new LogJoiner());
    expect(msgs).toEqual([
      { time: T2, stream: 'stderr', text: 'err line', complete: true },
      { time: T1, stream: 'stdout', text: 'aaabbbccc', complete: true },
      { time: T3, stream: 'stdout', text: 'next', complete: true },
    ]);
  });
  it('keeps a line without its F as incomplete, printed without a newline', () => {
    const j = new LogJoiner();
    expect(messagesOf(`${T1} stdout F done\n${T2} stdout P no newline yet`, j)).toHaveLength(1);
    const rest = j.flush();
    expect(rest).toEqual([{ time: T2, stream: 'stdout', text: 'no newline yet', complete: false }]);
    expect(formatMessage(rest[0], false)).toBe('no newline yet');
    expect(formatMessage(rest[0], true)).toBe(`${T2} no newline yet`);
    expect(j.flush()).toEqual([]);
  });
  it('skips malformed lines without losing the lines around them', () => {
    expect(messagesOf(`${T1} stdout F a\nnot a record\n\n${T2} stdout F b`, new LogJoiner()).map((m) => m.text)).toEqual(['a', 'b']);
  });
});

describe('--tail, --since, --timestamps, --limit-bytes', () => {
  const msgs = messagesOf([`${T1} stdout F one`, `${T2} stdout P t`, `${T2} stdout F wo`, `${T3} stderr F three`].join('\n'), new LogJoiner());
  it('tail counts whole lines, not records', () => {
    expect(selectMessages(msgs, { tail: 2 }).map((m) => m.text)).toEqual(['two', 'three']);
    expect(selectMessages(msgs, { tail: 0 })).toEqual([]);
    expect(selectMessages(msgs, { tail: -1 })).toHaveLength(3);
    expect(selectMessages(msgs, { tail: 10 })).toHaveLength(3);
  });
  it('since keeps lines at or after the time', () => {
    expect(selectMessages(msgs, { tail: -1, sinceMs: Date.parse(T2) }).map((m) => m.text)).toEqual(['two', 'three']);
    expect(selectMessages(msgs, { tail: 1, sinceMs: Date.parse(T1) }).map((m) => m.text)).toEqual(['three']);
  });
  it('timestamps prefix the original time', () => {
    expect(formatMessage(msgs[0], true)).toBe(`${T1} one\n`);
    expect(formatMessage(msgs[0], false)).toBe('one\n');
  });
  it('parses --since as RFC 3339 (zone or UTC), Unix seconds, or a duration back from now', () => {
    const now = Date.parse('2026-12-04T08:00:00Z');
    expect(parseSince('2026-12-04T07:00:00Z', now)).toBe(Date.parse('2026-12-04T07:00:00Z'));
    expect(parseSince('2026-12-04T07:00:00', now)).toBe(Date.parse('2026-12-04T07:00:00Z'));
    expect(parseSince('2026-12-04T09:00:00+02:00', now)).toBe(Date.parse('2026-12-04T07:00:00Z'));
    expect(parseSince('1700000000', now)).toBe(1_700_000_000_000);
    expect(parseSince('1700000000.5', now)).toBe(1_700_000_000_500);
    expect(parseSince('42m', now)).toBe(now - 42 * 60_000);
    expect(parseSince('10s', now)).toBe(now - 10_000);
    expect(() => parseSince('yesterday', now)).toThrow('--since');
  });
  it('limit-bytes cuts the output at the byte count, across lines and streams', () => {
    const got: [LogStream, string][] = [];
    const sink = new LimitedSink({ write: (s, t) => got.push([s, t]) }, 6);
    sink.write('stdout', 'abcd\n');
    sink.write('stderr', 'efgh\n');
    sink.write('stdout', 'more');
    expect(got).toEqual([
      ['stdout', 'abcd\n'],
      ['stderr', 'e'],
    ]);
    expect(sink.exhausted).toBe(true);
    const all: string[] = [];
    const open = new LimitedSink({ write: (_s, t) => all.push(t) }, -1);
    open.write('stdout', 'x'.repeat(100));
    expect(all[0]).toHaveLength(100);
    expect(open.exhausted).toBe(false);
  });
});

describe('LogFile (following a real file)', () => {
  let dir = '';
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('returns only whole lines, picks up appends, and survives rotation and truncation', async () => {
    dir = await mkdtemp(join(tmpdir(), 'skiff-logs-'));
    const path = join(dir, '0.log');
    const f = new LogFile(path);
    expect(await f.readMore()).toEqual([]); // not created yet
    await writeFile(path, `${T1} stdout F first\n${T1} stdout P sec`);
    expect((await f.readMore()).map((m) => m.text)).toEqual(['first']);
    // the rest of a record cut mid-line, then its F
    await appendFile(path, `ond-part\n${T2} stdout F !\n`);
    expect((await f.readMore()).map((m) => m.text)).toEqual(['second-part!']);
    // rotation: the old file is renamed and a new one started; the tail of the old one is not lost
    await appendFile(path, `${T2} stdout F last of old\n`);
    await rename(path, `${path}.1`);
    await writeFile(path, `${T3} stderr F new file\n`);
    expect((await f.readMore()).map((m) => m.text)).toEqual(['last of old', 'new file']);
    // truncation in place (seen while the file is shorter than what was read): read again from the start
    await truncate(path, 0);
    expect(await f.readMore()).toEqual([]);
    await writeFile(path, `${T3} stdout F after truncate, a longer line than before\n`);
    expect((await f.readMore()).map((m) => m.text)).toEqual(['after truncate, a longer line than before']);
    expect(await f.readMore()).toEqual([]);
    await f.close();
  });

  it('keeps the bytes of a line exactly, multi-byte characters across read boundaries and bytes that are not UTF-8', async () => {
    dir = await mkdtemp(join(tmpdir(), 'skiff-logs-'));
    const path = join(dir, '0.log');
    // 70 000 bytes of 'é' straddle the reader's 64 KiB buffer
    const text = 'é'.repeat(35_000);
    const bad = Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0x0a]);
    await writeFile(path, Buffer.concat([Buffer.from(`${T1} stdout F ${text}\n${T1} stdout F `), bad]));
    const f = new LogFile(path);
    const msgs = await f.readMore();
    await f.close();
    expect(msgs).toHaveLength(2);
    expect(Buffer.from(msgs[0].text, 'latin1').toString('utf8')).toBe(text);
    expect(Buffer.from(msgs[1].text, 'latin1')).toEqual(bad.subarray(0, -1));
  });
});
