// Pure parts of the container machinery: CRI log records and their completion, the exec output cap,
// stop signals, status translation and list filters.
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { completeCriLog, criTimestamp, parseCriLogLine, streamsLeftPartial } from '../../src/oci/cri-log.js';
import { CappedBuffer } from '../../src/oci/exec-sync.js';
import { normalizeSignal } from '../../src/containers/manager.js';
import { containerStatus, criContainer, exitReason, matchesFilter } from '../../src/containers/status.js';
import type { ContainerRecord } from '../../src/store/records.js';
import type { ContainerConfig__Output } from '../../src/gen/runtime/v1/ContainerConfig.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('CRI log', () => {
  it('parses records, including empty text and text with spaces', () => {
    expect(parseCriLogLine('2026-01-01T00:00:00.000000001+00:00 stdout F hello world')).toEqual({ time: '2026-01-01T00:00:00.000000001+00:00', stream: 'stdout', partial: false, text: 'hello world' });
    expect(parseCriLogLine('t stderr P ')).toMatchObject({ stream: 'stderr', partial: true, text: '' });
    expect(parseCriLogLine('t stdout F')).toMatchObject({ text: '' });
    expect(parseCriLogLine('t stdin F x')).toBeUndefined();
    expect(parseCriLogLine('t stdout X x')).toBeUndefined();
    expect(parseCriLogLine('garbage')).toBeUndefined();
  });

  it('timestamps look like conmon’s (RFC 3339, nanoseconds)', () => {
    expect(criTimestamp(Date.UTC(2026, 0, 2, 3, 4, 5, 678), 901)).toBe('2026-01-02T03:04:05.678000901+00:00');
  });

  it('finds the streams whose last record is partial, ignoring a cut first line', () => {
    const tail = ['ut F cut-off', 't stdout P a', 't stderr F b', 't stdout P c', ''].join('\n');
    expect(streamsLeftPartial(tail, false)).toEqual(['stdout']);
    expect(streamsLeftPartial('t stdout P a\nt stdout F b\n', true)).toEqual([]);
    expect(streamsLeftPartial('t stdout P a\nt stderr P b\n', true)).toEqual(['stdout', 'stderr']);
  });

  it('completes a log with the missing F records, once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skoci-log-'));
    dirs.push(dir);
    const file = join(dir, 'c.log');
    await writeFile(file, 't1 stdout F line\nt2 stdout P no-newline\nt3 stderr P err-part\n');
    expect(await completeCriLog(file, Date.UTC(2026, 0, 1))).toEqual(['stdout', 'stderr']);
    const lines = (await readFile(file, 'utf8')).split('\n');
    expect(lines.slice(3)).toEqual([expect.stringMatching(/^2026-01-01T00:00:00\.\d{9}\+00:00 stdout F $/), expect.stringMatching(/ stderr F $/), '']);
    expect(await completeCriLog(file)).toEqual([]);
    expect(await completeCriLog(join(dir, 'missing.log'))).toEqual([]);
  });
});

describe('exec output cap', () => {
  it('keeps the first bytes up to a budget shared by both streams and counts the rest', () => {
    const budget = { left: 10 };
    const out = new CappedBuffer(budget);
    const err = new CappedBuffer(budget);
    out.push(Buffer.from('abcdef'));
    err.push(Buffer.from('123'));
    out.push(Buffer.from('ghijk'));
    err.push(Buffer.from('45'));
    expect(out.value().toString()).toBe('abcdefg');
    expect(err.value().toString()).toBe('123');
    expect(out.total).toBe(11);
    expect(out.truncated).toBe(true);
    expect(budget.left).toBe(0);
  });

  it('beyond what is its own, draws on a pool shared by all execs, and gives it back when released', () => {
    const shared = { left: 8 };
    const [a, b, c] = [0, 1, 2].map(() => new CappedBuffer({ left: 10 }, { own: { left: 2 }, shared }));
    a.push(Buffer.from('aaaaaaaaaa'));
    b.push(Buffer.from('bbbbbbbbbb'));
    // a took 2 of its own and 8 of the pool; b has only its own 2, and so has c
    expect([a.value().toString(), b.value().toString(), b.truncated, shared.left]).toEqual(['aaaaaaaaaa', 'bb', true, 0]);
    c.push(Buffer.from('cc'));
    expect(c.value().toString()).toBe('cc');
    a.release();
    b.release();
    expect(shared.left).toBe(8);
    a.release();
    expect(shared.left).toBe(8);
  });

  it('holds megabytes in one buffer, not one object per chunk', () => {
    const out = new CappedBuffer({ left: 5 * 1024 * 1024 });
    const chunk = Buffer.alloc(2, 'y');
    for (let i = 0; i < 3 * 1024 * 1024; i++) out.push(chunk);
    expect(out.value().length).toBe(5 * 1024 * 1024);
    expect(out.total).toBe(6 * 1024 * 1024);
  });
});

describe('stop signals', () => {
  it('normalizes names and numbers; rejects nonsense', () => {
    expect(normalizeSignal('SIGQUIT')).toBe('SIGQUIT');
    expect(normalizeSignal('term')).toBe('SIGTERM');
    expect(normalizeSignal('15')).toBe('15');
    expect(normalizeSignal('SIGRTMIN+3')).toBe('SIGRTMIN+3');
    expect(normalizeSignal('99')).toBeUndefined();
    expect(normalizeSignal('rm -rf')).toBeUndefined();
    expect(normalizeSignal(undefined)).toBeUndefined();
  });
});

function record(over: Partial<ContainerRecord> = {}): ContainerRecord {
  return {
    id: 'abc123',
    podId: 'pod1',
    config: {
      metadata: { name: 'web', attempt: 1 },
      image: { image: 'busybox', annotations: {}, user_specified_image: 'busybox', runtime_handler: '' },
      labels: { app: 'x' },
      annotations: {},
      mounts: [{ container_path: '/d', host_path: '/h', readonly: true, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uidMappings: [], gidMappings: [] }],
      linux: null,
    } as unknown as ContainerConfig__Output,
    handler: 'runc',
    imageId: 'sha256:' + 'a'.repeat(64),
    imageRef: 'docker.io/library/busybox:latest',
    state: 'exited',
    createdAt: '100',
    startedAt: '200',
    finishedAt: '300',
    exitCode: 3,
    reason: 'Error',
    logPath: '/logs/web.log',
    bundle: '/b',
    ...over,
  };
}

describe('status translation', () => {
  it('reasons: Completed, Error, OOMKilled', () => {
    expect(exitReason(0, false)).toBe('Completed');
    expect(exitReason(3, false)).toBe('Error');
    expect(exitReason(137, true)).toBe('OOMKilled');
  });

  it('ContainerStatus carries state, times, code, image, ref, mounts, log path', () => {
    const s = containerStatus(record());
    expect(s).toMatchObject({ id: 'abc123', state: 'CONTAINER_EXITED', created_at: '100', started_at: '200', finished_at: '300', exit_code: 3, reason: 'Error', log_path: '/logs/web.log' });
    expect(s.image_ref).toBe('sha256:' + 'a'.repeat(64));
    expect(containerStatus(record({ imageRepoDigest: 'docker.io/library/busybox@sha256:' + 'b'.repeat(64) })).image_ref).toMatch(/@sha256:b{64}$/);
    expect(s.mounts).toEqual([{ container_path: '/d', host_path: '/h', readonly: true, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE' }]);
    const created = containerStatus(record({ state: 'created', startedAt: undefined, finishedAt: undefined, exitCode: undefined, reason: undefined }));
    expect(created).toMatchObject({ state: 'CONTAINER_CREATED', started_at: '0', finished_at: '0', exit_code: 0, reason: '' });
    expect(criContainer(record())).toMatchObject({ id: 'abc123', pod_sandbox_id: 'pod1', state: 'CONTAINER_EXITED' });
  });

  it('list filters: id prefix, pod, state, labels', () => {
    const r = record();
    expect(matchesFilter(r, {})).toBe(true);
    expect(matchesFilter(r, { id: 'abc' })).toBe(true);
    expect(matchesFilter(r, { id: 'abd' })).toBe(false);
    expect(matchesFilter(r, { podId: 'pod1' })).toBe(true);
    expect(matchesFilter(r, { podId: 'pod2' })).toBe(false);
    expect(matchesFilter(r, { state: 'CONTAINER_EXITED' })).toBe(true);
    expect(matchesFilter(r, { state: 'CONTAINER_RUNNING' })).toBe(false);
    expect(matchesFilter(r, { labels: { app: 'x' } })).toBe(true);
    expect(matchesFilter(r, { labels: { app: 'y' } })).toBe(false);
  });
});
