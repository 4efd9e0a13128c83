// The README's demo (scripts/demo.sh) end to end: real daemon, image made from the host busybox, CNI
// bridge, runc + conmon; and its cleanup, also when it is interrupted half-way.
import { describe, it, expect } from 'vitest';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/daemon.js';

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the demo (setup.sh already ran: the test command runs it first). `interruptOn`: when stdout shows it,
 * SIGINT goes to the demo's whole process group, as a Ctrl-C in a terminal does.
 */
function runDemo(interruptOn?: RegExp): Promise<DemoRun> {
  return new Promise((resolve) => {
    const p = spawn('bash', [join(REPO_ROOT, 'scripts/demo.sh')], { env: { ...process.env, SKIFF_DEMO_SKIP_SETUP: '1' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let sent = false;
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (interruptOn && !sent && interruptOn.test(stdout)) {
        sent = true;
        process.kill(-p.pid!, 'SIGINT');
      }
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** What a demo run may leave behind, named from its own output. */
function leftovers(out: string): string[] {
  const found: string[] = [];
  const work = /root (\/tmp\/skiff-demo\.[A-Za-z0-9]+)\/root/.exec(out)?.[1];
  const bridge = /bridge (skdemo[0-9a-f]+) on/.exec(out)?.[1];
  expect(work, 'the demo names its scratch dir').toBeDefined();
  expect(bridge, 'the demo names its bridge').toBeDefined();
  if (existsSync(work!)) found.push(`dir ${work}`);
  if (readFileSync('/proc/self/mounts', 'utf8').includes(work!)) found.push(`mounts under ${work}`);
  if (existsSync(`/sys/class/net/${bridge}`)) found.push(`bridge ${bridge}`);
  const chain = `SKDEMO-${bridge!.slice('skdemo'.length)}`;
  if (execFileSync('iptables', ['-w', '5', '-S'], { encoding: 'utf8' }).includes(chain)) found.push(`iptables chain ${chain}`);
  // the daemon, conmon, the pod's init name the scratch dir; the container's own processes are found by
  // their cgroup, whose path holds the container ID
  const ctr = /^container ([0-9a-f]{64})$/m.exec(out)?.[1];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd = '';
    let cgroup = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      cgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(work!) || (ctr && cgroup.includes(ctr))) found.push(`process ${pid}: ${cmd.replace(/\0/g, ' ').slice(0, 120)}`);
  }
  return found;
}

describe('scripts/demo.sh', () => {
  it('runs a pod from an image made from the host busybox, shows its logs, and leaves nothing behind', { timeout: 180_000 }, async () => {
    const r = await runDemo();
    expect(r.stderr.replace('this line goes to stderr\n', '')).not.toMatch(/skiff: |FAILED/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Loaded image: localhost\/skiff-demo\/busybox:1 \(sha256:[0-9a-f]{64}\)/);
    // the container's own words, read back from its CRI log by `skiff logs`: hostname and CNI address
    expect(r.stdout).toMatch(/hello from a skiff container on skiff-demo, pod IP 10\.94\.\d+\.\d+\/24/);
    expect(r.stderr).toContain('this line goes to stderr');
    // exec -s, then the TERM trap's goodbye with its CRI timestamp
    expect(r.stdout).toMatch(/cat \/etc\/hostname\nskiff-demo\n/);
    expect(r.stdout).toMatch(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\S* got SIGTERM, bye/);
    expect(r.stdout).toMatch(/Exited\s+hello\s+0\s+[0-9a-f]{13}\s+demo\s+default/);
    expect(r.stdout).toMatch(/Removed sandbox [0-9a-f]{64}/);
    expect(r.stdout).toContain('demo finished; everything cleaned up');
    expect(leftovers(r.stdout)).toEqual([]);
  });

  it('cleans up after a Ctrl-C with a pod running', { timeout: 180_000 }, async () => {
    const r = await runDemo(/^container [0-9a-f]{64}$/m);
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('demo FAILED (exit 130); cleaned up');
    expect(leftovers(r.stdout)).toEqual([]);
  });
});
