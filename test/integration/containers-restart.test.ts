// Issue 5: restart recovery. kill -9 the daemon; containers keep running and logging under conmon; a new
// daemon on the same root lists them with the right state, and exits that happened while it was down
// carry their real exit codes.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, stat, rm, access } from 'node:fs/promises';
import { join } from 'node:path';
import { runtimeCall } from '../../src/cli/client.js';
import { removeScratchDir } from '../helpers/daemon.js';
import {
  ociDaemon, destroyEnv, setupGuard, teardownGuard, ctrConfig, runPod, createCtr, startCtr, ctrStatus, waitExited, exec, type OciEnv,
} from '../helpers/containers.js';

let first: OciEnv | undefined;
let second: OciEnv | undefined;

beforeAll(() => setupGuard());
afterAll(async () => {
  if (second) await destroyEnv(second);
  if (first) await removeScratchDir(first.dir).catch(() => undefined);
  await teardownGuard();
});

describe('restart recovery', () => {
  it('after kill -9 containers keep running and logging; a new daemon reports states and real exit codes', async () => {
    first = await ociDaemon();
    const env = first;
    const pod = await runPod(env);
    const ticker = await createCtr(env, pod, ctrConfig('ticker', ['sh', '-c', 'i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done']));
    await startCtr(env, ticker);
    const later = await createCtr(env, pod, ctrConfig('later', ['sh', '-c', 'sleep 1.5; printf no-newline; exit 7']));
    await startCtr(env, later);
    const idle = await createCtr(env, pod, ctrConfig('idle', ['sh', '-c', 'echo started-late; sleep 1000']));
    const done = await createCtr(env, pod, ctrConfig('done', ['sh', '-c', 'exit 3']));
    await startCtr(env, done);
    expect((await waitExited(env, done)).exit_code).toBe(3);
    const tickerLog = (await ctrStatus(env, ticker)).status!.log_path;
    // a pod whose record will vanish while the daemon is down (as if its removal crashed half-way)
    const orphanPod = await runPod(env);
    const orphan = await createCtr(env, orphanPod, ctrConfig('orphan', ['sleep', '1000']));
    await startCtr(env, orphan);
    const orphanPid = JSON.parse((await ctrStatus(env, orphan, true)).info.info).pid as number;

    env.d.proc.kill('SIGKILL');
    await env.d.exited;
    env.d.client.close();
    const sizeAtKill = (await stat(tickerLog)).size;
    await rm(join(env.d.root, 'pods', `${orphanPod.id}.json`));
    // `later` exits while no daemon runs
    await new Promise((r) => setTimeout(r, 2500));
    expect((await stat(tickerLog)).size).toBeGreaterThan(sizeAtKill);

    second = await ociDaemon({ dir: env.dir, net: env.net, load: false });
    const env2 = second;
    const states = Object.fromEntries(
      (await runtimeCall(env2.d.client, 'ListContainers', {})).containers.map((c) => [c.metadata!.name, c.state]),
    );
    expect(states).toEqual({ ticker: 'CONTAINER_RUNNING', later: 'CONTAINER_EXITED', idle: 'CONTAINER_CREATED', done: 'CONTAINER_EXITED' });
    // the orphan is gone: no record, no process, no bundle
    const alive = (pid: number) => access(`/proc/${pid}`).then(() => true, () => false);
    for (let i = 0; i < 50 && (await alive(orphanPid)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await alive(orphanPid)).toBe(false);
    expect(await access(join(env2.d.state, 'containers', orphan)).then(() => true, () => false)).toBe(false);

    const l = (await ctrStatus(env2, later)).status!;
    expect(l.exit_code).toBe(7);
    expect(l.reason).toBe('Error');
    // finished while the daemon was down: the monitor's time, not the restart's
    expect(Number(BigInt(l.finished_at) / 1_000_000n)).toBeLessThan(Date.now() - 500);
    // its unterminated output was completed with an F record by the new daemon
    const laterLog = (await readFile(l.log_path, 'utf8')).split('\n');
    expect(laterLog.pop()).toBe('');
    expect(laterLog.at(-2)).toMatch(/ stdout P no-newline$/);
    expect(laterLog.at(-1)).toMatch(/ stdout F $/);
    expect((await ctrStatus(env2, done)).status!.exit_code).toBe(3);

    // the recovered containers are fully usable
    expect((await exec(env2, ticker, ['echo', 'still-here'])).stdout.toString()).toBe('still-here\n');
    await startCtr(env2, idle);
    expect((await ctrStatus(env2, idle)).status!.state).toBe('CONTAINER_RUNNING');
    const t0 = Date.now();
    await runtimeCall(env2.d.client, 'StopContainer', { container_id: ticker, timeout: 1 });
    expect(Date.now() - t0).toBeLessThan(2000);
    const t = (await ctrStatus(env2, ticker)).status!;
    expect(t.state).toBe('CONTAINER_EXITED');
    // exits are still noticed on their own after the restart
    const quick = await createCtr(env2, pod, ctrConfig('quick', ['sh', '-c', 'sleep 0.3; exit 9']));
    await startCtr(env2, quick);
    expect((await waitExited(env2, quick)).exit_code).toBe(9);
    for (const id of [ticker, later, idle, done, quick]) await runtimeCall(env2.d.client, 'RemoveContainer', { container_id: id });
    expect((await runtimeCall(env2.d.client, 'ListContainers', {})).containers).toEqual([]);
  });

});
