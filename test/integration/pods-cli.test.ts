// The pod verbs of the skiff client (runp, pods, inspectp, stopp, rmp) against a real daemon with a real
// CNI bridge network, checked for crictl's flags and output shapes.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startDaemon, makeScratchDir, removeScratchDir, runCli, cliFor, type TestDaemon } from '../helpers/daemon.js';
import { removeCgroupTree } from '../helpers/cgroups.js';
import { installGuard, removeGuard, makeNetwork, deleteBridge, type TestNetwork } from '../helpers/cni.js';

const CGROUP_TOP = `/skiff-test-podcli-${randomBytes(3).toString('hex')}`;
let d: TestDaemon;
let net: TestNetwork;
let dir: string;

beforeAll(async () => {
  installGuard();
  dir = await makeScratchDir('skiff-podcli-');
  net = await makeNetwork(dir);
  d = await startDaemon({ dir, config: `cgroup_parent = "${CGROUP_TOP}"\n[cni]\nconf_dir = "${net.confDir}"\n` });
});
afterAll(async () => {
  await runCli(['-r', d.socket, 'rmp', '-f', '-a']).catch(() => undefined);
  await d.cleanup();
  await removeScratchDir(dir); // the daemon helper keeps a dir it was given
  deleteBridge(net);
  removeGuard();
  await removeCgroupTree(CGROUP_TOP);
});

const { cli, ok } = cliFor(() => d.socket);

describe('pod verbs of the skiff client', () => {
  // ~35 client processes, each ~0.6 s to start on a loaded 2-core VM
  it('runp (JSON with protojson names, YAML with proto names), pods with filters, inspectp, stopp, rmp', { timeout: 180_000 }, async () => {
    const jsonFile = join(dir, 'pod-a.json');
    await writeFile(
      jsonFile,
      JSON.stringify({
        metadata: { name: 'web-ポッド', namespace: 'team-a', uid: 'uid-a', attempt: 1 },
        hostname: 'web',
        logDirectory: join(dir, 'logs-a'),
        labels: { app: 'web', tier: 'front' },
        annotations: { 'example.com/note': 'hi' },
        linux: { cgroupParent: `${CGROUP_TOP}/a`, securityContext: { namespaceOptions: { pid: 'CONTAINER' } } },
      }),
    );
    const yamlFile = join(dir, 'pod-b.yaml');
    await writeFile(
      yamlFile,
      [
        'metadata:',
        '  name: db',
        '  namespace: team-b',
        '  uid: uid-b',
        'labels:',
        '  app: db',
        'linux:',
        `  cgroup_parent: ${CGROUP_TOP}/b`,
        '  security_context:',
        '    namespace_options:',
        '      network: 2', // NODE, as a number
        '      pid: CONTAINER',
        '',
      ].join('\n'),
    );
    const a = (await ok('runp', jsonFile)).trim();
    const b = (await ok('runp', '-r', 'crun', yamlFile)).trim(); // -r after the verb is runp's handler
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(b).toMatch(/^[0-9a-f]{64}$/);

    // table: crictl's columns, newest first, truncated ids
    const table = (await ok('pods')).trimEnd().split('\n');
    expect(table[0].split(/\s{2,}/)).toEqual(['POD ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'ATTEMPT', 'RUNTIME']);
    expect(table).toHaveLength(3);
    expect(table[1]).toMatch(new RegExp(`^${b.slice(0, 13)}\\s+(Less than a second|\\d+ seconds?) ago\\s+Ready\\s+db\\s+team-b\\s+0\\s+crun$`));
    expect(table[2]).toMatch(new RegExp(`^${a.slice(0, 13)}\\s+.* ago\\s+Ready\\s+web-ポッド\\s+team-a\\s+1\\s+runc$`));

    // filters: -q, --name/--namespace regexps, --label, --id prefix, --state, --latest, --last, --runtime
    expect((await ok('pods', '-q')).trim().split('\n')).toEqual([b, a]);
    expect((await ok('pods', '-q', '--name', '^web')).trim()).toBe(a);
    expect((await ok('pods', '-q', '--namespace', 'team-b')).trim()).toBe(b);
    expect((await ok('pods', '-q', '--label', 'app=web', '--label', 'tier=front')).trim()).toBe(a);
    expect((await ok('pods', '-q', '--label', 'app=none')).trim()).toBe('');
    expect((await ok('pods', '-q', '--id', a.slice(0, 8))).trim()).toBe(a);
    expect((await ok('pods', '-q', '--latest')).trim()).toBe(b);
    expect((await ok('pods', '-q', '-n', '2')).trim().split('\n')).toEqual([b, a]);
    expect((await ok('pods', '-q', '--runtime', 'crun')).trim()).toBe(b);
    expect((await ok('pods', '--no-trunc')).includes(a)).toBe(true);
    const verbose = await ok('pods', '-v', '--id', a);
    expect(verbose).toContain(`ID: ${a}\nName: web-ポッド\nUID: uid-a\nNamespace: team-a\nAttempt: 1\nStatus: SANDBOX_READY\n`);
    expect(verbose).toContain('Labels:\n\tapp -> web\n\ttier -> front\nAnnotations:\n\texample.com/note -> hi\nRuntime handler: runc');

    // -o json / yaml: protojson names, label maps untouched
    const listed = JSON.parse(await ok('pods', '-o', 'json', '--id', a)) as { items: { id: string; createdAt: string; runtimeHandler: string; labels: Record<string, string> }[] };
    expect(listed.items).toHaveLength(1);
    expect(listed.items[0]).toMatchObject({ id: a, runtimeHandler: 'runc', labels: { app: 'web', tier: 'front' } });
    expect(await ok('pods', '-o', 'yaml', '--id', b)).toContain(`id: ${b}`);

    // inspectp: status + verbose info (parsed), 1.29 fields; -q drops the verbose info; table form
    const insp = JSON.parse(await ok('inspectp', a.slice(0, 10))) as {
      status: { id: string; state: string; network: { ip: string }; metadata: { name: string }; linux: { namespaces: { options: { pid: string } } } };
      info: { namespaces: { net: string } };
      containersStatuses: unknown[];
      timestamp: string;
    };
    expect(insp.status).toMatchObject({ id: a, state: 'SANDBOX_READY', metadata: { name: 'web-ポッド' } });
    expect(insp.status.network.ip.startsWith(net.subnet.split('.').slice(0, 3).join('.'))).toBe(true);
    expect(insp.status.linux.namespaces.options.pid).toBe('CONTAINER');
    expect(insp.info.namespaces.net).toContain(a);
    expect(insp.containersStatuses).toEqual([]);
    expect(BigInt(insp.timestamp)).toBeGreaterThan(0n);
    const quiet = JSON.parse(await ok('inspectp', '-q', b)) as Record<string, unknown>;
    expect(Object.keys(quiet).sort()).toEqual(['containersStatuses', 'status', 'timestamp']);
    const tableOut = await ok('inspectp', '-o', 'table', a);
    expect(tableOut).toContain(`ID: ${a}`);
    expect(tableOut).toContain(`IP Addresses: ${insp.status.network.ip}`);
    expect(tableOut).toMatch(/Labels:\n\tapp -> web\n\ttier -> front/);

    // rmp refuses a ready pod without -f; stopp then rmp; --state filters
    const refused = await cli('rmp', a);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('is running');
    expect(await ok('stopp', a)).toBe(`Stopped sandbox ${a}\n`);
    expect((await ok('pods', '-q', '--state', 'notready')).trim()).toBe(a);
    expect((await ok('pods', '-q', '-s', 'Ready')).trim()).toBe(b);
    expect(await ok('pods', '--state', 'notready')).toMatch(/NotReady/);
    expect(await ok('rmp', a)).toBe(`Removed sandbox ${a}\n`);
    expect(await ok('rmp', '-f', '-a')).toBe(`Removed sandbox ${b}\n`);
    expect(await ok('pods', '-q')).toBe('');
    expect(await ok('rmp', '-a')).toBe('');
  });

  it('reports bad input clearly: unknown fields, bad enums, bad files, bad flags, missing pods', async () => {
    const bad = join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ metadata: { name: 'x', nmespace: 'y' } }));
    let r = await cli('runp', bad);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('metadata.nmespace: unknown field');
    await writeFile(bad, JSON.stringify({ metadata: { name: 'x' }, linux: { security_context: { namespace_options: { network: 'HOST' } } } }));
    r = await cli('runp', bad);
    expect(r.stderr).toContain('linux.security_context.namespace_options.network: expected one of POD, CONTAINER, NODE, TARGET');
    await writeFile(bad, '{ "metadata": ');
    r = await cli('runp', bad);
    expect(r.stderr).toContain('not valid JSON or YAML');
    r = await cli('runp', join(dir, 'missing.json'));
    expect(r.stderr).toContain('ENOENT');
    r = await cli('pods', '--state', 'running');
    expect(r.stderr).toContain('--state should be ready or notready');
    r = await cli('pods', '--label', 'novalue');
    expect(r.stderr).toContain('expected key=value');
    r = await cli('inspectp', 'ffff0000');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ffff0000: rpc error: code = NOT_FOUND desc = pod sandbox "ffff0000" not found');
    r = await cli('rmp');
    expect(r.stderr).toContain('ID cannot be empty');
    // stop/remove of a pod that is gone is fine (idempotent, as the CRI says)
    expect((await cli('stopp', 'ab'.repeat(32))).code).toBe(0);
    // runp from stdin
    const fromStdin = await runCli(['-r', d.socket, 'runp', '-'], {}, 'metadata: {name: stdin-pod, namespace: x, uid: u}\nlinux: {security_context: {namespace_options: {network: NODE, pid: CONTAINER}}}\n');
    expect(fromStdin.stderr).toBe('');
    expect(fromStdin.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
    await ok('rmp', '-f', fromStdin.stdout.trim());
  });
});
