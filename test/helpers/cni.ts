// Test CNI networks for the pods helper's tests: a bridge `skpod<rand>` on a /24 of 10.89.0.0/16, leases in
// a scratch dir, no ipMasq, and a guard chain that drops forwarding out of 10.89.0.0/16.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';

export const GUARD_CHAIN = 'SKIFF-PODS-GUARD';
const SUBNET = '10.89.0.0/16';

function ipt(args: string[]): boolean {
  try {
    execFileSync('iptables', ['-w', '5', ...args], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Idempotent: the chain exists, is jumped to from FORWARD, and drops traffic leaving the pod subnet. */
export function installGuard(chain = GUARD_CHAIN, subnet = SUBNET): void {
  if (!ipt(['-n', '-L', chain])) ipt(['-N', chain]);
  ipt(['-F', chain]);
  ipt(['-A', chain, '-s', subnet, '!', '-d', subnet, '-j', 'DROP']);
  if (!ipt(['-C', 'FORWARD', '-j', chain])) ipt(['-I', 'FORWARD', '-j', chain]);
}

export function removeGuard(chain = GUARD_CHAIN): void {
  while (ipt(['-D', 'FORWARD', '-j', chain])) {
    // remove every jump
  }
  ipt(['-F', chain]);
  ipt(['-X', chain]);
}

export interface TestNetwork {
  name: string;
  bridge: string;
  subnet: string;
  confDir: string;
  leaseDir: string;
}

let counter = Math.floor(Math.random() * 200);

/** Writes a conflist (bridge + host-local [+ portmap]) into `<dir>/net.d`. */
export async function makeNetwork(
  dir: string,
  opts: { portmap?: boolean; cniVersion?: string; extraPlugins?: object[]; /** e.g. "skoci" */ prefix?: string; /** e.g. "10.90" (a /16) */ net16?: string } = {},
): Promise<TestNetwork> {
  const tag = randomBytes(3).toString('hex');
  counter = (counter + 1) % 250;
  const prefix = opts.prefix ?? 'skpod';
  const net16 = opts.net16 ?? '10.89';
  const net: TestNetwork = {
    name: `${prefix}-${tag}`,
    bridge: `${prefix}${tag}`,
    subnet: `${net16}.${counter}.0/24`,
    confDir: join(dir, 'net.d'),
    leaseDir: join(dir, 'leases'),
  };
  await mkdir(net.confDir, { recursive: true });
  const plugins: object[] = [
    {
      type: 'bridge',
      bridge: net.bridge,
      isGateway: true,
      ipMasq: false,
      hairpinMode: true,
      ipam: { type: 'host-local', dataDir: net.leaseDir, ranges: [[{ subnet: net.subnet }]], routes: [{ dst: `${net16}.0.0/16` }] },
    },
  ];
  if (opts.portmap) plugins.push({ type: 'portmap', capabilities: { portMappings: true }, snat: true });
  plugins.push(...(opts.extraPlugins ?? []));
  await writeFile(join(net.confDir, `10-${prefix}.conflist`), JSON.stringify({ cniVersion: opts.cniVersion ?? '1.0.0', name: net.name, plugins }, null, 2));
  return net;
}

export function deleteBridge(net: TestNetwork): void {
  try {
    execFileSync('ip', ['link', 'del', net.bridge], { stdio: 'ignore' });
  } catch {
    // not there
  }
}

/** veth interfaces enslaved to the bridge. */
export function bridgePorts(net: TestNetwork): string[] {
  try {
    const out = execFileSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8' });
    return out.split('\n').filter(Boolean);
  } catch {
    return [];
  }
}
