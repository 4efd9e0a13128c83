// CDI spec files: parsing, validation with file:line errors, the registry's override/conflict rules,
// re-reading changed files, and the OCI edits (unit level; the end-to-end case is in integration).
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, mkdir, writeFile, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSpecFile } from '../../src/cdi/spec-file.js';
import { CdiRegistry, MAX_SPEC_FILE_BYTES, readSpecFileSafely } from '../../src/cdi/registry.js';
import { execFileSync } from 'node:child_process';
import { applyCdiEdits, completeDeviceNodes, splitDevT, type OciSpecForCdi } from '../../src/cdi/oci-edits.js';
import { requestedCdiDevices } from '../../src/cdi/names.js';
import { SkiffError } from '../../src/errors.js';

const goodYaml = `cdiVersion: "0.5.0"
kind: vendor.com/gpu
devices:
  - name: gpu0
    containerEdits:
      env: ["GPU=0"]
      deviceNodes:
        - path: /dev/gpu0
          hostPath: /dev/null
containerEdits:
  env: ["GPU_DRIVER=1"]
`;

describe('CDI spec file parsing', () => {
  it('accepts a valid YAML and JSON spec', () => {
    expect(parseSpecFile('/x/a.yaml', goodYaml)).toMatchObject({ errors: [], spec: { kind: 'vendor.com/gpu' } });
    const json = JSON.stringify({ cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd', containerEdits: { env: ['A=1'] } }] }, null, 2);
    expect(parseSpecFile('/x/a.json', json).errors).toEqual([]);
  });

  it('names the line of a YAML syntax error', () => {
    const r = parseSpecFile('/etc/cdi/bad.yaml', 'cdiVersion: "0.3.0"\nkind: a.com/b\ndevices:\n  - name: [oops\n');
    expect(r.spec).toBeUndefined();
    expect(r.errors[0].path).toBe('/etc/cdi/bad.yaml');
    expect(r.errors[0].line).toBeGreaterThanOrEqual(4);
  });

  it('names the line of a JSON syntax error', () => {
    const r = parseSpecFile('/etc/cdi/bad.json', '{\n  "cdiVersion": "0.3.0",\n  "kind": "a.com/b",\n  "devices": [,]\n}\n');
    expect(r.errors[0]).toMatchObject({ path: '/etc/cdi/bad.json', line: 4 });
    expect(r.errors[0].message).toContain('invalid JSON');
  });

  it('refuses values the runtime would fail on later: device numbers past Linux\'s, NUL bytes, a relative mount hostPath', () => {
    const devices = [
      { name: 'a', containerEdits: { deviceNodes: [{ path: '/dev/a', type: 'c', major: 4096, minor: 1 }] } },
      { name: 'b', containerEdits: { deviceNodes: [{ path: '/dev/b', type: 'c', major: 1, minor: 1048576 }] } },
      { name: 'c', containerEdits: { env: ['A=\0b'] } },
      { name: 'd', containerEdits: { mounts: [{ hostPath: 'relative/dir', containerPath: '/m' }] } },
    ];
    const r = parseSpecFile('/etc/cdi/x.json', JSON.stringify({ cdiVersion: '0.6.0', kind: 'a.com/b', devices }));
    expect(r.errors.map((e) => e.message).join('\n')).toMatch(/major[\s\S]*minor[\s\S]*NUL[\s\S]*must be absolute/);
    expect(r.errors).toHaveLength(4);
  });

  it('points a validation error at the offending line', () => {
    const text = 'cdiVersion: "0.3.0"\nkind: a.com/b\ndevices:\n  - name: d\n    containerEdits:\n      deviceNodes:\n        - path: relative/dev\n';
    const r = parseSpecFile('/etc/cdi/v.yaml', text);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ line: 7, kind: 'a.com/b' });
    expect(r.errors[0].message).toContain('must be absolute');
  });

  it.each([
    ['hostPath needs 0.5.0', '0.4.0', { name: 'd', containerEdits: { deviceNodes: [{ path: '/dev/x', hostPath: '/dev/null' }] } }, '0.5.0'],
    ['mount type needs 0.4.0', '0.3.0', { name: 'd', containerEdits: { mounts: [{ hostPath: '/a', containerPath: '/b', type: 'bind' }] } }, '0.4.0'],
    ['a digit-first name needs 0.5.0', '0.4.0', { name: '0d', containerEdits: { env: ['A=1'] } }, '0.5.0'],
    ['device annotations need 0.6.0', '0.5.0', { name: 'd', annotations: { a: 'b' }, containerEdits: { env: ['A=1'] } }, '0.6.0'],
    ['additionalGids need 0.7.0', '0.6.0', { name: 'd', containerEdits: { additionalGids: [44] } }, '0.7.0'],
  ])('checks fields against cdiVersion: %s', (_t, version, device, needed) => {
    const r = parseSpecFile('/a.json', JSON.stringify({ cdiVersion: version, kind: 'a.com/b', devices: [device] }));
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0].message).toContain(`needs at least ${needed}`);
    const ok = parseSpecFile('/a.json', JSON.stringify({ cdiVersion: needed, kind: 'a.com/b', devices: [device] }));
    expect(ok.errors).toEqual([]);
  });

  it.each([
    ['bad kind', { cdiVersion: '0.3.0', kind: 'nokind', devices: [] }, 'vendor.com/class'],
    ['bad device name', { cdiVersion: '0.5.0', kind: 'a.com/b', devices: [{ name: 'bad name', containerEdits: { env: ['A=1'] } }] }, 'invalid device name'],
    ['unknown version', { cdiVersion: '9.9.9', kind: 'a.com/b', devices: [] }, 'unsupported cdiVersion'],
    ['unknown field', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [], bogus: 1 }, 'unknown field "bogus"'],
    ['empty edits', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd', containerEdits: {} }] }, 'empty containerEdits'],
    ['missing edits', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd' }] }, 'no containerEdits'],
    ['duplicate device', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd', containerEdits: { env: ['A=1'] } }, { name: 'd', containerEdits: { env: ['A=1'] } }] }, 'defined twice'],
    ['bad hook', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd', containerEdits: { hooks: [{ hookName: 'never', path: '/bin/true' }] } }] }, 'hookName'],
    ['bad env', { cdiVersion: '0.3.0', kind: 'a.com/b', devices: [{ name: 'd', containerEdits: { env: ['NOEQUALS'] } }] }, 'KEY=VALUE'],
  ])('rejects %s', (_t, doc, msg) => {
    const r = parseSpecFile('/a.json', JSON.stringify(doc));
    expect(r.spec).toBeUndefined();
    expect(r.errors.map((e) => e.message).join('\n')).toContain(msg);
  });
});

describe('CDI registry', () => {
  let dir: string;
  let etc: string;
  let run: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'skiff-cdi-'));
    etc = join(dir, 'etc');
    run = join(dir, 'run');
    await mkdir(etc);
    await mkdir(run);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const spec = (kind: string, name: string, env: string, version = '0.3.0') =>
    JSON.stringify({ cdiVersion: version, kind, devices: [{ name, containerEdits: { env: [env] } }] });

  it('resolves devices from YAML and JSON files, with spec-level edits once per file', async () => {
    await writeFile(join(etc, 'gpu.yaml'), goodYaml);
    await writeFile(join(etc, 'net.json'), spec('example.org/net', 'nic', 'NIC=1'));
    const reg = new CdiRegistry([etc, run]);
    const r = await reg.resolve(['vendor.com/gpu=gpu0', 'example.org/net=nic']);
    expect(r.edits.map((e) => e.env)).toEqual([['GPU_DRIVER=1'], ['GPU=0'], ['NIC=1']]);
  });

  it('lets a later dir override an earlier one', async () => {
    await writeFile(join(etc, 'a.json'), spec('a.com/b', 'd', 'FROM=etc'));
    await writeFile(join(run, 'a.json'), spec('a.com/b', 'd', 'FROM=run'));
    const r = await new CdiRegistry([etc, run]).resolve(['a.com/b=d']);
    expect(r.edits[0].env).toEqual(['FROM=run']);
  });

  it('reports a device defined in two files of one dir as a conflict naming both', async () => {
    await writeFile(join(etc, 'one.json'), spec('a.com/b', 'd', 'X=1'));
    await writeFile(join(etc, 'two.yaml'), spec('a.com/b', 'd', 'X=2'));
    const reg = new CdiRegistry([etc, run]);
    const err = await reg.resolve(['a.com/b=d']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('failed_precondition');
    expect((err as SkiffError).message).toContain(join(etc, 'one.json'));
    expect((err as SkiffError).message).toContain(join(etc, 'two.yaml'));
    // a later dir resolves the conflict by overriding
    await writeFile(join(run, 'fix.json'), spec('a.com/b', 'd', 'X=3'));
    expect((await reg.resolve(['a.com/b=d'])).edits[0].env).toEqual(['X=3']);
  });

  it('keeps good files usable next to a broken one, and names the broken file and line for an unknown device', async () => {
    await writeFile(join(etc, 'good.json'), spec('a.com/b', 'ok', 'OK=1'));
    await writeFile(join(etc, 'broken.yaml'), 'cdiVersion: "0.3.0"\nkind: a.com/b\ndevices:\n  - name: missing\n    containerEdits:\n      env: [NOEQUALS]\n');
    const reg = new CdiRegistry([etc]);
    expect((await reg.resolve(['a.com/b=ok'])).edits).toHaveLength(1);
    const err = (await reg.resolve(['a.com/b=missing']).catch((e: unknown) => e)) as SkiffError;
    expect(err.message).toContain('unresolvable CDI device "a.com/b=missing"');
    expect(err.message).toContain(`${join(etc, 'broken.yaml')}:6`);
    // errors of files for other kinds are not mixed in
    await writeFile(join(etc, 'other.json'), '{"cdiVersion":"0.3.0","kind":"z.com/z","devices":[{"name":"q"}]}');
    expect(((await reg.resolve(['a.com/b=missing']).catch((e: unknown) => e)) as SkiffError).message).not.toContain('other.json');
  });

  it('refuses a spec file over the size limit without parsing it, and other files keep working', async () => {
    await writeFile(join(etc, 'good.json'), spec('a.com/b', 'ok', 'OK=1'));
    const devices = Array.from({ length: 60_000 }, (_, i) => ({ name: `d${i}`, containerEdits: { env: [`X${i}=1`] } }));
    const huge = JSON.stringify({ cdiVersion: '0.3.0', kind: 'a.com/huge', devices });
    expect(huge.length).toBeGreaterThan(MAX_SPEC_FILE_BYTES);
    await writeFile(join(etc, 'huge.json'), huge);
    const reg = new CdiRegistry([etc]);
    expect((await reg.resolve(['a.com/b=ok'])).edits).toHaveLength(1);
    const err = (await reg.resolve(['a.com/huge=d1']).catch((e: unknown) => e)) as SkiffError;
    expect(err.message).toContain(`${join(etc, 'huge.json')}`);
    expect(err.message).toMatch(/larger than/);
  });

  it('never blocks on a FIFO put at a spec path, even one that was a regular file when looked at', async () => {
    await writeFile(join(etc, 'good.json'), spec('a.com/b', 'ok', 'OK=1'));
    execFileSync('mkfifo', [join(etc, 'fifo.json')]);
    const reg = new CdiRegistry([etc]);
    expect((await reg.resolve(['a.com/b=ok'])).edits).toHaveLength(1);
    // what load() reads is what it opened: a FIFO there is refused from the open file, not read
    const read = await readSpecFileSafely(join(etc, 'fifo.json'));
    expect(read).toEqual({ error: 'not a regular file' });
  });

  it('re-reads a spec file when it changes, and forgets a removed one', async () => {
    const file = join(etc, 'a.json');
    await writeFile(file, spec('a.com/b', 'd', 'V=1'));
    const reg = new CdiRegistry([etc]);
    expect((await reg.resolve(['a.com/b=d'])).edits[0].env).toEqual(['V=1']);
    await writeFile(file, spec('a.com/b', 'd', 'V=22'));
    const later = new Date(Date.now() + 5000);
    await utimes(file, later, later);
    expect((await reg.resolve(['a.com/b=d'])).edits[0].env).toEqual(['V=22']);
    await rm(file);
    await expect(reg.resolve(['a.com/b=d'])).rejects.toThrow(/unresolvable/);
  });

  it('rejects a malformed qualified name as invalid argument', async () => {
    const err = (await new CdiRegistry([etc]).resolve(['not-qualified']).catch((e: unknown) => e)) as SkiffError;
    expect(err.kind).toBe('invalid_argument');
  });

  it('collects devices from CDI_devices and the older cdi.k8s.io annotations', () => {
    expect(
      requestedCdiDevices({
        CDI_devices: [{ name: 'a.com/b=x' }],
        annotations: { 'cdi.k8s.io/z': 'a.com/b=y, a.com/b=x', other: 'a.com/b=no' },
      }),
    ).toEqual(['a.com/b=x', 'a.com/b=y']);
  });
});

describe('CDI OCI edits', () => {
  it('splits dev_t like glibc', () => {
    expect(splitDevT((1n << 8n) | 3n)).toEqual({ major: 1, minor: 3 });
    // glibc makedev for major 0x12345, minor 0x6789a
    const major = 0x12345n;
    const minor = 0x6789an;
    const dev = (minor & 0xffn) | ((major & 0xfffn) << 8n) | ((minor & ~0xffn) << 12n) | ((major & ~0xfffn) << 32n);
    expect(splitDevT(dev)).toEqual({ major: 0x12345, minor: 0x6789a });
  });

  it('reads type and numbers of a device node from the host (/dev/null is c 1:3)', async () => {
    const [e] = await completeDeviceNodes([{ deviceNodes: [{ path: '/dev/mynull', hostPath: '/dev/null' }] }]);
    expect(e.deviceNodes![0]).toMatchObject({ path: '/dev/mynull', type: 'c', major: 1, minor: 3, fileMode: 0o666 });
    await expect(completeDeviceNodes([{ deviceNodes: [{ path: '/dev/nope-skiff' }] }])).rejects.toThrow(/nope-skiff/);
    await expect(completeDeviceNodes([{ deviceNodes: [{ path: '/etc/hostname' }] }])).rejects.toThrow(/not a device/);
  });

  it('applies env, devices, mounts, hooks and GIDs without touching the input', () => {
    const spec: OciSpecForCdi = {
      process: { env: ['PATH=/bin', 'A=old'], user: { uid: 0, gid: 0 } },
      mounts: [{ destination: '/data', type: 'bind', source: '/old' }],
      linux: { devices: [], resources: { devices: [{ allow: false, access: 'rwm' }] } },
    };
    const before = structuredClone(spec);
    const out = applyCdiEdits(spec, [
      {
        env: ['A=new', 'B=1'],
        deviceNodes: [{ path: '/dev/x', type: 'c', major: 1, minor: 3, permissions: 'rw' }],
        mounts: [
          { hostPath: '/host/sub', containerPath: '/data/sub' },
          { hostPath: '/host/data', containerPath: '/data', options: ['ro', 'bind'] },
        ],
        hooks: [{ hookName: 'createContainer', path: '/usr/bin/hook', args: ['hook', 'x'] }],
        additionalGids: [0, 44, 44],
      },
    ]);
    expect(spec).toEqual(before);
    expect(out.process!.env).toEqual(['PATH=/bin', 'A=new', 'B=1']);
    expect(out.linux!.devices).toEqual([{ path: '/dev/x', type: 'c', major: 1, minor: 3 }]);
    expect(out.linux!.resources!.devices).toEqual([{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 3, access: 'rw' }]);
    expect(out.mounts!.map((m) => [m.destination, m.source, m.options])).toEqual([
      ['/data', '/host/data', ['ro', 'bind']],
      ['/data/sub', '/host/sub', ['rbind']],
    ]);
    expect(out.hooks!.createContainer).toEqual([{ path: '/usr/bin/hook', args: ['hook', 'x'] }]);
    expect(out.process!.user!.additionalGids).toEqual([44]);
  });

  it('refuses incomplete device nodes (the host lookup step was skipped)', () => {
    expect(() => applyCdiEdits({}, [{ deviceNodes: [{ path: '/dev/x' }] }])).toThrow(/completeDeviceNodes/);
  });
});
