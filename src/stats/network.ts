// Network counters of a pod's network namespace, from /proc/<pid>/net/dev (any process in the netns) or,
// with no process at hand, by reading /proc/net/dev from inside the bind-mounted netns via nsenter.
import { readFile } from 'node:fs/promises';
import { run } from '../util/exec.js';

export interface InterfaceCounters {
  name: string;
  rxBytes: bigint;
  rxErrors: bigint;
  txBytes: bigint;
  txErrors: bigint;
}

/** Parses /proc/net/dev; the loopback interface is left out (cAdvisor does the same). */
export function parseNetDev(text: string): InterfaceCounters[] {
  const out: InterfaceCounters[] = [];
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const f = line.slice(colon + 1).trim().split(/\s+/).map((x) => BigInt(x));
    if (name === 'lo' || f.length < 16) continue;
    out.push({ name, rxBytes: f[0], rxErrors: f[2], txBytes: f[8], txErrors: f[10] });
  }
  return out;
}

export async function readPodNetwork(where: { pid?: number; netnsPath?: string }): Promise<InterfaceCounters[] | undefined> {
  if (where.pid !== undefined) {
    try {
      return parseNetDev(await readFile(`/proc/${where.pid}/net/dev`, 'utf8'));
    } catch {
      // the process went away; try the netns file
    }
  }
  if (where.netnsPath !== undefined) {
    const r = await run('nsenter', [`--net=${where.netnsPath}`, 'cat', '/proc/net/dev'], { timeoutMs: 5000, maxOutputBytes: 1 << 20 });
    if (r.code === 0) return parseNetDev(r.stdout);
  }
  return undefined;
}
