// Issue 3 end to end through the CRI: an image pulled from docker-registry (200 layers, a 64 KiB config
// label, whiteouts) runs as a container, and RemoveImage does not break a container that uses its image.
// Pods on the images subnet 10.93.0.0/16 (`skimg*`).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runtimeCall, imageCall } from '../../src/cli/client.js';
import { parseCriLogLine } from '../../src/oci/cri-log.js';
import { installGuard, removeGuard, makeNetwork } from '../helpers/cni.js';
import { ociDaemon, destroyEnv, teardownGuard, ctrConfig, runPod, createCtr, startCtr, waitExited, exec, type OciEnv } from '../helpers/containers.js';
import { makeScratchDir } from '../helpers/daemon.js';
import { startRegistry, pushImage, type TestRegistry } from '../helpers/registry.js';
import { busyboxEntries, image, layer, type Layer } from '../helpers/images.js';

const GUARD = 'SKIFF-IMG-GUARD';
let env: OciEnv;
let reg: TestRegistry;
let bigName: string;

beforeAll(async () => {
  installGuard(GUARD, '10.93.0.0/16');
  reg = await startRegistry();
  const layers: Layer[] = [await layer([...busyboxEntries(), { name: 'etc/doomed', content: 'x' }, { name: 'redo/old', content: 'old' }])];
  for (let i = 1; i < 197; i++) layers.push(await layer([{ name: `layers/${i}`, content: String(i) }, { name: 'top', content: String(i) }]));
  layers.push(await layer([{ name: 'etc/.wh.doomed', content: '' }]));
  layers.push(await layer([{ name: '.wh.redo', content: '' }, { name: 'redo/fresh', content: 'f' }], 'zstd'));
  layers.push(await layer([{ name: 'top', content: 'last' }]));
  bigName = await pushImage(reg, 'skimg/many', 'v1', image(layers, { config: { Labels: { big: 'l'.repeat(64 * 1024) }, Cmd: ['sh'] } }));
  const dir = await makeScratchDir('skimg-');
  env = await ociDaemon({ dir, net: await makeNetwork(dir, { prefix: 'skimg', net16: '10.93' }), load: false });
});
afterAll(async () => {
  if (env) await destroyEnv(env);
  await reg?.stop();
  removeGuard(GUARD);
  await teardownGuard();
});

async function logText(path: string): Promise<string> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => parseCriLogLine(l)!.text)
    .join('\n');
}

describe('images in containers', () => {
  it('an image with 200 layers and a 64 KiB label pulls and runs', async () => {
    const pulled = await imageCall(env.d.client, 'PullImage', { image: { image: bigName } }, 0);
    const st = await imageCall(env.d.client, 'ImageStatus', { image: { image: bigName }, verbose: true });
    expect(st.image!.id).toBe(pulled.image_ref);
    expect(JSON.parse(st.info.info).imageSpec.config.Labels.big).toHaveLength(64 * 1024);
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('many', ['sh', '-c', 'cat /top; echo; ls /redo; cat /layers/123; echo; test -e /etc/doomed || echo gone'], { image: { image: bigName } }));
    await startCtr(env, id);
    const s = await waitExited(env, id, 30_000);
    expect(s.exit_code).toBe(0);
    // partial log records (P) split lines: compare the non-empty pieces
    expect((await logText(s.log_path)).split('\n').filter(Boolean)).toEqual(['last', 'fresh', '123', 'gone']);
  });

  it('RemoveImage leaves a running container working; its snapshots go with the container', async () => {
    const l = await layer([...busyboxEntries(), { name: 'marker', content: 'still here' }]);
    const name = await pushImage(reg, 'skimg/inuse', 'v1', image([l]));
    await imageCall(env.d.client, 'PullImage', { image: { image: name } }, 0);
    const pod = await runPod(env);
    const id = await createCtr(env, pod, ctrConfig('user', ['sleep', '300'], { image: { image: name } }));
    await startCtr(env, id);
    await imageCall(env.d.client, 'RemoveImage', { image: { image: name } });
    expect((await imageCall(env.d.client, 'ImageStatus', { image: { image: name } })).image).toBeNull();
    const r = await exec(env, id, ['cat', '/marker']);
    expect(r.exit_code).toBe(0);
    expect(r.stdout.toString()).toBe('still here');
    const snaps = join(env.d.root, 'images/runc/snapshots');
    const before = (await readdir(snaps)).filter((n) => /^\d+$/.test(n)).length;
    await runtimeCall(env.d.client, 'StopContainer', { container_id: id, timeout: 0 });
    await runtimeCall(env.d.client, 'RemoveContainer', { container_id: id });
    const after = (await readdir(snaps)).filter((n) => /^\d+$/.test(n)).length;
    expect(before - after).toBe(1);
  });
});
