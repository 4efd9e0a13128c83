// Client option parsing and list filtering (ps, pods, inspect, update), and the shared output helpers.
import { describe, it, expect } from 'vitest';
import { applyClientFilter, containerStateWord, eachId, keyValues, parseContainerState, parsePodState, pullAuth, shortId } from '../../src/cli/filters.js';
import { updateResources, inspectView } from '../../src/cli/commands/containers.js';
import { nanosToRfc3339, parseInfo, mapLines, describeError } from '../../src/cli/output.js';

interface Item {
  created_at: string;
  labels: Record<string, string>;
  name: string;
}
const item = (name: string, created: number, ns = 'default'): Item => ({ name, created_at: String(created), labels: { 'io.kubernetes.pod.namespace': ns } });

describe('state words', () => {
  it('maps crictl --state words to CRI states, case-insensitively', () => {
    expect(parseContainerState('running')).toBe('CONTAINER_RUNNING');
    expect(parseContainerState('Exited')).toBe('CONTAINER_EXITED');
    expect(parseContainerState('CREATED')).toBe('CONTAINER_CREATED');
    expect(parseContainerState('unknown')).toBe('CONTAINER_UNKNOWN');
    expect(() => parseContainerState('stopped')).toThrow('--state should be one of created, running, exited or unknown');
    expect(parsePodState('ready')).toBe('SANDBOX_READY');
    expect(parsePodState('NotReady')).toBe('SANDBOX_NOTREADY');
    expect(parsePodState('sandbox_notready')).toBe('SANDBOX_NOTREADY');
    expect(() => parsePodState('running')).toThrow('ready or notready');
    expect(containerStateWord('CONTAINER_RUNNING')).toBe('Running');
  });
});

describe('applyClientFilter', () => {
  const items = [item('web', 100), item('db', 300, 'prod'), item('web-2', 200, 'prod'), item('cache', 400)];
  const byName = (i: Item) => i.name;
  const byNs = (i: Item) => i.labels['io.kubernetes.pod.namespace'];
  it('sorts newest first', () => {
    expect(applyClientFilter(items, {}, byName, byNs).map(byName)).toEqual(['cache', 'db', 'web-2', 'web']);
  });
  it('filters by name and namespace regular expressions', () => {
    expect(applyClientFilter(items, { name: '^web' }, byName, byNs).map(byName)).toEqual(['web-2', 'web']);
    expect(applyClientFilter(items, { namespace: 'prod' }, byName, byNs).map(byName)).toEqual(['db', 'web-2']);
    expect(applyClientFilter(items, { name: 'web', namespace: '^default$' }, byName, byNs).map(byName)).toEqual(['web']);
    expect(() => applyClientFilter(items, { name: '(' }, byName, byNs)).toThrow('--name "(": not a valid regular expression');
  });
  it('cuts to --latest and --last after filtering', () => {
    expect(applyClientFilter(items, { latest: true }, byName, byNs).map(byName)).toEqual(['cache']);
    expect(applyClientFilter(items, { last: 2, namespace: 'prod' }, byName, byNs).map(byName)).toEqual(['db', 'web-2']);
    expect(applyClientFilter(items, { last: 0 }, byName, byNs)).toHaveLength(4);
  });
  it('compares int64 nanosecond times exactly', () => {
    const big = [item('a', 0), item('b', 0)];
    big[0].created_at = '1796367968193836381';
    big[1].created_at = '1796367968193836382';
    expect(applyClientFilter(big, { latest: true }, byName, byNs).map(byName)).toEqual(['b']);
  });
});

describe('option helpers', () => {
  it('key=value lists keep = in values and refuse empty keys', () => {
    expect(keyValues(['a=b', 'c=d=e', 'f='])).toEqual({ a: 'b', c: 'd=e', f: '' });
    expect(() => keyValues(['novalue'], '--label')).toThrow('--label "novalue": expected key=value');
  });
  it('short IDs are 13 characters without sha256:', () => {
    expect(shortId('sha256:0123456789abcdef0123')).toBe('0123456789abc');
    expect(shortId('0123456789abcdef', false)).toBe('0123456789abcdef');
  });
  it('pull credentials from --creds, --auth, --username', () => {
    expect(pullAuth({})).toBeNull();
    expect(pullAuth({ creds: 'me:p:w' })).toEqual({ username: 'me', password: 'p:w' });
    expect(pullAuth({ creds: 'me' })).toEqual({ username: 'me', password: '' });
    expect(pullAuth({ auth: 'bWU6cHc=' })).toEqual({ auth: 'bWU6cHc=' });
  });
  it('eachId tries every ID and names each failure', async () => {
    const done: string[] = [];
    await expect(
      eachId(['a', 'b', 'c'], async (id) => {
        if (id === 'b') throw Object.assign(new Error('x'), { code: 5, details: 'container "b" not found' });
        done.push(id);
      }),
    ).rejects.toThrow('b: rpc error: code = NOT_FOUND desc = container "b" not found');
    expect(done).toEqual(['a', 'c']);
  });
});

describe('update flags', () => {
  it('sends only the resources given', () => {
    expect(updateResources({ memory: 64 << 20, unified: [] })).toEqual({ memory_limit_in_bytes: 64 << 20 });
    expect(updateResources({ cpuPeriod: 100000, cpuQuota: 50000, cpuShare: 512, cpusetCpus: '0', oomScoreAdj: 10, unified: ['memory.high=1000000'] })).toEqual({
      cpu_period: 100000,
      cpu_quota: 50000,
      cpu_shares: 512,
      cpuset_cpus: '0',
      oom_score_adj: 10,
      unified: { 'memory.high': '1000000' },
    });
    expect(() => updateResources({ unified: [] })).toThrow('nothing to update');
  });
});

describe('output helpers', () => {
  it('formats nanosecond times as RFC 3339 with trailing zeros trimmed', () => {
    expect(nanosToRfc3339('1796367968193836380')).toBe('2026-12-04T07:06:08.19383638Z');
    expect(nanosToRfc3339('1796367968000000000')).toBe('2026-12-04T07:06:08Z');
    expect(nanosToRfc3339('0')).toBe('1970-01-01T00:00:00Z');
  });
  it('parses JSON info values and keeps the rest', () => {
    expect(parseInfo({ b: '{"pid":3}', a: 'plain' })).toEqual({ a: 'plain', b: { pid: 3 } });
    expect(Object.keys(parseInfo({ b: '1', a: '2' }))).toEqual(['a', 'b']);
  });
  it('prints maps sorted, nothing for an empty one', () => {
    expect(mapLines('Labels', { z: '1', a: '2' })).toEqual(['Labels:', '\ta -> 2', '\tz -> 1']);
    expect(mapLines('Labels', {})).toEqual([]);
  });
  it('describes gRPC errors as crictl does', () => {
    expect(describeError(Object.assign(new Error('x'), { code: 14, details: 'No connection established' }))).toBe('rpc error: code = UNAVAILABLE desc = No connection established');
    expect(describeError(new Error('plain'))).toBe('plain');
    // the daemon answered: a registry it could not reach is not an unreachable daemon
    const registry = 'localhost:5999: request to localhost:5999 failed: connect ECONNREFUSED 127.0.0.1:5999 (image=foo)';
    expect(describeError(Object.assign(new Error('x'), { code: 14, details: registry }))).toBe(`rpc error: code = UNAVAILABLE desc = ${registry}`);
    const down = Object.assign(new Error('x'), { code: 14, details: 'No connection established. Last error: Error: connect ENOENT /run/skiff/skiff.sock. Resolution note: ' });
    expect(describeError(down)).toBe(
      'rpc error: code = UNAVAILABLE desc = No connection established. Last error: Error: connect ENOENT /run/skiff/skiff.sock. (is "skiff daemon" running there? the endpoint comes from -r or CONTAINER_RUNTIME_ENDPOINT)',
    );
  });
  it('inspect shows readable times: none before start or finish', () => {
    const view = inspectView({
      status: {
        id: 'c1',
        state: 'CONTAINER_CREATED',
        created_at: '1796367968000000000',
        started_at: '0',
        finished_at: '0',
      } as never,
      info: { info: '{"pid":42}' },
    });
    expect(view).toMatchObject({ status: { created_at: '2026-12-04T07:06:08Z', started_at: '', finished_at: '' }, info: { pid: 42 } });
  });
});
