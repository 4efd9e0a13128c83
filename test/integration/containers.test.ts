// Issue 5: the container lifecycle with real runc/crun under conmon, CNI bridge pods on 10.90.0.0/16.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { runtimeCall } from '../../src/cli/client.js';
import { parseCriLogLine } from '../../src/oci/cri-log.js';
import {
  ociDaemon, destroyEnv, setupGuard, teardownGuard, ctrConfig, runPod, createCtr, startCtr, ctrStatus, waitExited, exec, CRUN_CONFIG, type OciEnv,
} from '../helpers/containers.js';

let env: OciEnv;

beforeAll(async () => {
  setupGuard();
  env = await ociDaemon({ extraConfig: CRUN_CONFIG });
});
afterAll(async () => {
  if (env) await destroyEnv(env);
  await teardownGuard();
});

const codeOf = (p: Promise<unknown>) => p.then(() => -1, (e: { code: number }) => e.code);

async function logRecords(path: string) {
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  expect(lines.pop()).toBe('');
  return lines.map((l) => {
    const r = parseCriLogLine(l);
    expect(r, `not a CRI log line: ${l.slice(0, 100)}`).toBeDefined();
    return r!;
  });
}

describe('container lifecycle', () => {
  it('creates, starts, lists, stops and removes a container; status and events tell the truth', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('web', ['sh', '-c', 'echo up; exec sleep 1000']));
    let s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_CREATED');
    expect(s.image_ref).toMatch(/^sha256:/);
    expect(s.log_path).toBe(join(pod.config.log_directory!, 'web.log'));
    await startCtr(env, id);
    s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_RUNNING');
    expect(BigInt(s.started_at)).toBeGreaterThan(0n);

    const verbose = await ctrStatus(env, id, true);
    const info = JSON.parse(verbose.info.info);
    expect(info.pid).toBeGreaterThan(0);
    expect(info.runtimeHandler).toBe('runc');
    expect(info.runtimeSpec.process.args).toEqual(['sh', '-c', 'echo up; exec sleep 1000']);

    // filters: id prefix, pod, state, labels
    const list = async (filter: object) => (await runtimeCall(env.d.client, 'ListContainers', { filter })).containers.map((c) => c.id);
    expect(await list({ id: id.slice(0, 10) })).toEqual([id]);
    expect(await list({ pod_sandbox_id: pod.id })).toEqual([id]);
    expect(await list({ state: { state: 'CONTAINER_RUNNING' }, label_selector: { ctr: 'web' } })).toContain(id);
    expect(await list({ state: { state: 'CONTAINER_EXITED' }, pod_sandbox_id: pod.id })).toEqual([]);
    expect(await list({ label_selector: { ctr: 'nope' } })).toEqual([]);

    const podStatus = await runtimeCall(env.d.client, 'PodSandboxStatus', { pod_sandbox_id: pod.id });
    expect(podStatus.containers_statuses.map((c) => c.id)).toEqual([id]);
    expect(BigInt(podStatus.timestamp)).toBeGreaterThan(0n);

    const t0 = Date.now();
    await runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout: 10 });
    // PID 1 ignores an unhandled SIGTERM, so this is the SIGKILL path only after 10 s … unless sleep got it:
    // `exec sleep` makes sleep PID 1, which ignores SIGTERM: it must end by SIGKILL at ~10 s.
    const took = Date.now() - t0;
    expect(took).toBeLessThan(11_000);
    s = (await ctrStatus(env, id)).status!;
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(137);
    expect(s.reason).toBe('Error');
    expect(BigInt(s.finished_at)).toBeGreaterThanOrEqual(BigInt(s.started_at));

    await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    expect(await list({ pod_sandbox_id: pod.id })).toEqual([]);
    expect(await codeOf(ctrStatus(env, id))).toBe(grpcStatus.NOT_FOUND);
    // idempotent
    await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    await runtimeCall(env.d.client, 'RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  it('writes the CRI log: lines, a >16 KiB line in P records with a final F, and an F after output without newline', async () => {
    const pod = await runPod(env);
    const script = 'echo hello; echo oops >&2; head -c 40000 /dev/zero | tr "\\0" x; echo; printf tail-without-newline';
    const id = await createCtr(env, pod, ctrConfig('logs', ['sh', '-c', script]));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.exit_code).toBe(0);
    expect(s.reason).toBe('Completed');
    const recs = await logRecords(s.log_path);
    const out = recs.filter((r) => r.stream === 'stdout');
    expect(out[0]).toMatchObject({ partial: false, text: 'hello' });
    expect(recs.find((r) => r.stream === 'stderr')).toMatchObject({ partial: false, text: 'oops' });
    for (const r of recs) expect(r.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)$/);
    // the long line: P records, then one F; joined they are the whole line
    const long: string[] = [];
    let i = 1;
    while (out[i].partial) long.push(out[i++].text);
    expect(long.length).toBeGreaterThan(1);
    long.push(out[i++].text);
    expect(long.join('')).toBe('x'.repeat(40000));
    // the unterminated tail: a P with the text, completed by an F
    expect(out[i]).toMatchObject({ partial: true, text: 'tail-without-newline' });
    expect(out[i + 1]).toMatchObject({ partial: false, text: '' });
    expect(out.length).toBe(i + 2);
  });

  it('reports exit code 3 as 3 with reason Error', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('three', ['sh', '-c', 'exit 3']));
    await startCtr(env, id);
    const s = await waitExited(env, id);
    expect(s.state).toBe('CONTAINER_EXITED');
    expect(s.exit_code).toBe(3);
    expect(s.reason).toBe('Error');
  });

  it('runs ExecSync: stdout, stderr, exit code; a sleeping exec past its timeout is killed', async () => {
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('exec', ['sleep', '1000']));
    await startCtr(env, id);
    const r = await exec(env, id, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    expect(r.stdout.toString()).toBe('out\n');
    expect(r.stderr.toString()).toBe('err\n');
    expect(r.exit_code).toBe(7);

    const t0 = Date.now();
    const err = await exec(env, id, ['sh', '-c', 'echo $$ > /tmp/execpid; exec sleep 60'], 1).then(
      () => undefined,
      (e: { code: number; details: string }) => e,
    );
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(err?.code).toBe(grpcStatus.DEADLINE_EXCEEDED);
    expect(err?.details).toMatch(/timed out/);
    // the exec'd process is gone
    const pid = (await exec(env, id, ['cat', '/tmp/execpid'])).stdout.toString().trim();
    const alive = await exec(env, id, ['sh', '-c', `kill -0 ${pid} 2>/dev/null && echo alive || echo dead`]);
    expect(alive.stdout.toString().trim()).toBe('dead');
  });
});
