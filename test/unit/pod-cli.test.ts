// Pure parts of the pod verbs: crictl-style durations and reading CRI messages from protojson documents.
import { describe, it, expect } from 'vitest';
import { humanDuration, createdAgo } from '../../src/cli/output.js';
import { keyValues } from '../../src/cli/filters.js';
import { fromProtoJson } from '../../src/cli/proto-input.js';

describe('humanDuration (crictl CREATED column)', () => {
  it('uses go-units words', () => {
    expect(humanDuration(300)).toBe('Less than a second');
    expect(humanDuration(1000)).toBe('1 second');
    expect(humanDuration(59_000)).toBe('59 seconds');
    expect(humanDuration(61_000)).toBe('About a minute');
    expect(humanDuration(5 * 60_000)).toBe('5 minutes');
    expect(humanDuration(70 * 60_000)).toBe('About an hour');
    expect(humanDuration(30 * 3_600_000)).toBe('30 hours');
    expect(humanDuration(3 * 86_400_000)).toBe('3 days');
    expect(humanDuration(20 * 86_400_000)).toBe('2 weeks');
    expect(humanDuration(100 * 86_400_000)).toBe('3 months');
    expect(humanDuration(800 * 86_400_000)).toBe('2 years');
    expect(createdAgo(String(BigInt(Date.now() - 5000) * 1_000_000n))).toMatch(/^[56] seconds ago$/);
  });
  it('parses key=value lists', () => {
    expect(keyValues(['a=b', 'c=d=e', 'f='], '--label')).toEqual({ a: 'b', c: 'd=e', f: '' });
    expect(() => keyValues(['=x'], '--label')).toThrow('expected key=value');
  });
});

describe('fromProtoJson', () => {
  it('takes proto and JSON names, enum names and numbers, 64-bit ints as strings; leaves map keys alone', () => {
    const cfg = fromProtoJson('PodSandboxConfig', {
      metadata: { name: 'n', namespace: 'ns', uid: 'u', attempt: 2 },
      logDirectory: '/tmp/l',
      labels: { my_label: 'x', 'example.com/someKey': 'y' },
      port_mappings: [{ protocol: 'UDP', containerPort: 53, host_port: 5353 }],
      linux: {
        cgroupParent: '/x',
        sysctls: { 'net.ipv4.ip_forward': '1' },
        resources: { memory_limit_in_bytes: '9007199254740993', cpuShares: 512 },
        security_context: { namespaceOptions: { network: 2, pid: 'CONTAINER' }, runAsUser: { value: 1000 } },
      },
    });
    expect(cfg).toEqual({
      metadata: { name: 'n', namespace: 'ns', uid: 'u', attempt: 2 },
      log_directory: '/tmp/l',
      labels: { my_label: 'x', 'example.com/someKey': 'y' },
      port_mappings: [{ protocol: 'UDP', container_port: 53, host_port: 5353 }],
      linux: {
        cgroup_parent: '/x',
        sysctls: { 'net.ipv4.ip_forward': '1' },
        resources: { memory_limit_in_bytes: '9007199254740993', cpu_shares: '512' },
        security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER' }, run_as_user: { value: '1000' } },
      },
    });
  });
  it('names the path of what is wrong', () => {
    expect(() => fromProtoJson('PodSandboxConfig', { metadata: { nam: 'x' } })).toThrow('metadata.nam: unknown field');
    expect(() => fromProtoJson('PodSandboxConfig', { port_mappings: [{ protocol: 'ICMP' }] })).toThrow('port_mappings[0].protocol: expected one of TCP, UDP, SCTP');
    expect(() => fromProtoJson('PodSandboxConfig', { labels: ['a'] })).toThrow('labels: expected a map');
    expect(() => fromProtoJson('PodSandboxConfig', { metadata: { attempt: 'two' } })).toThrow('metadata.attempt: expected an integer');
    expect(() => fromProtoJson('PodSandboxConfig', 'text')).toThrow('the document: expected an object');
  });
});
