// Small helpers the benchmarks share (not a bench itself: the runner only picks up *.bench.mjs).
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs a command to completion; a non-zero exit throws with its output. */
export function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status ?? r.signal}\n${r.stderr ?? ''}${r.stdout ?? ''}`);
  return r.stdout;
}

/** Runs a command, output discarded; true when it succeeded. */
export const quiet = (cmd, args) => spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 }).status === 0;

/** Polls `check` until it returns true (errors count as "not yet"). */
export async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Lazily unmounts everything mounted below `dir`, deepest first (what a runtime under test left behind). */
export async function unmountBelow(dir) {
  const mounts = (await readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m) => m && (m === dir || m.startsWith(`${dir}/`)))
    .sort()
    .reverse();
  for (const m of mounts) quiet('umount', ['-l', m]);
}

/**
 * The command that runs bin/skiff under this node with the node flags of bin/skiff's shebang (the daemon's
 * heap settings), so a bench measures the daemon as installed without depending on which node PATH finds.
 */
export function skiffCommand(repo, extraNodeArgs = []) {
  const bin = join(repo, 'bin/skiff');
  const flags = readFileSync(bin, 'utf8').split('\n')[0].split(/\s+/).filter((a) => a.startsWith('--'));
  return { cmd: process.execPath, args: [...flags, ...extraNodeArgs, bin] };
}
