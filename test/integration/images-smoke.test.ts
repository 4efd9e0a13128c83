import { it, expect } from 'vitest';
import { startRegistry, pushBusybox } from '../helpers/registry.js';
import { startDaemon, runCli } from '../helpers/daemon.js';
it('smoke', async () => {
  const reg = await startRegistry();
  const name = await pushBusybox(reg);
  const d = await startDaemon();
  const r = await runCli(['-r', d.socket, 'pull', name]);
  console.log(r, d.logs().slice(-3000));
  console.log(await runCli(['-r', d.socket, 'images']));
  console.log(await runCli(['-r', d.socket, 'imagefsinfo']));
  await d.cleanup(); await reg.stop();
  expect(r.code).toBe(0);
});
