// Test CNI networks for the pods helper's tests: a bridge `skpod<rand>` on a /24 of 10.89.0.0/16, leases in
// a scratch dir, no ipMasq, and a guard chain that drops forwarding out of 10.89.0.0/16.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';

// One chain per test process: test files run in parallel, and one file's afterAll must not take away
// the guard another file's pods still rely on.
export const GUARD_CHAIN = `SKPOD-GUARD-${process.pid}`;
const SUBNET = '10.89.0.0/16';

function ipt(args: string[]): boolean {
  try {
    execFileSync('iptables', ['-w', '5', ...args], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Idempotent: the chain exists, is jumped to from FORWARD, and drops traffic leaving the pod subnet (v4; v6 test ranges never get a gateway). */
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

let counter = Math.floor(Math.random() * 250);

function subnetInUse(subnet: string): boolean {
  try {
    return execFileSync('ip', ['route', 'show', subnet], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false;
  }
}

export interface NetworkOptions {
  portmap?: boolean;
  /** the bandwidth plugin (capability bandwidth) after the bridge */
  bandwidth?: boolean;
  cniVersion?: string;
  extraPlugins?: object[];
  /** an IPv6 range (fd89:<n>::/64) next to the IPv4 one; no gateway then (no forwarding turned on in the host) */
  dualStack?: boolean;
  /** bridge/network name prefix of the test area, e.g. "skoci" (default "skpod") */
  prefix?: string;
  /** the test area's /16, e.g. "10.90" (default "10.89") */
  net16?: string;
}

/** Writes a conflist (bridge + host-local [+ portmap, bandwidth, extras]) into `<dir>/net.d`. */
export async function makeNetwork(dir: string, opts: NetworkOptions = {}): Promise<TestNetwork> {
  const tag = randomBytes(3).toString('hex');
  const prefix = opts.prefix ?? 'skpod';
  const net16 = opts.net16 ?? '10.89';
  // Parallel test files each make networks: skip /24s another one has on a bridge already.
  do counter = (counter + 1) % 250;
  while (subnetInUse(`${net16}.${counter}.0/24`));
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
      isGateway: !opts.dualStack,
      ipMasq: false,
      hairpinMode: true,
      ipam: {
        type: 'host-local',
        dataDir: net.leaseDir,
        ranges: [[{ subnet: net.subnet }], ...(opts.dualStack ? [[{ subnet: `fd89:${counter.toString(16)}::/64` }]] : [])],
        // the gateway spelled out: bridge 1.1.1's CHECK compares routes exactly and fails on a gw-less one
        routes: opts.dualStack ? [] : [{ dst: `${net16}.0.0/16`, gw: `${net16}.${counter}.1` }],
      },
    },
  ];
  if (opts.portmap) plugins.push({ type: 'portmap', capabilities: { portMappings: true }, snat: true });
  if (opts.bandwidth) plugins.push({ type: 'bandwidth', capabilities: { bandwidth: true } });
  plugins.push(...(opts.extraPlugins ?? []));
  await writeFile(join(net.confDir, `10-${prefix}.conflist`), JSON.stringify({ cniVersion: opts.cniVersion ?? '1.0.0', name: net.name, plugins }, null, 2));
  return net;
}

/**
 * Writes a CNI plugin of our own, `<dir>/cni-bin/<name>` (node): VERSION is answered, then `body` runs with
 * `cmd` (CNI_COMMAND) and `conf` (the parsed stdin config). Returns the bin dir.
 */
async function writePlugin(dir: string, name: string, body: string): Promise<string> {
  const bin = join(dir, 'cni-bin');
  await mkdir(bin, { recursive: true });
  const script = `#!${process.execPath}
const { existsSync } = require('node:fs');
let input = '';
process.stdin.on('data', (d) => (input += d)).on('end', () => {
  const cmd = process.env.CNI_COMMAND;
  if (cmd === 'VERSION') return console.log(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] }));
  const conf = JSON.parse(input || '{}');
${body}
});
`;
  await writeFile(join(bin, name), script, { mode: 0o755 });
  return bin;
}

/**
 * A CNI plugin of our own in `<dir>/cni-bin`: ADD waits `ms` then passes the previous result on (so a run
 * can be cancelled or the daemon killed while ADD is in progress); DEL and CHECK succeed at once.
 * Returns the bin dir to list before the real plugins' dir.
 */
export function writeSlowPlugin(dir: string, ms: number, name = 'skpod-slow'): Promise<string> {
  return writePlugin(
    dir,
    name,
    `  if (cmd !== 'ADD') return;
  setTimeout(() => console.log(JSON.stringify({ cniVersion: conf.cniVersion, ...conf.prevResult })), ${ms});`,
  );
}

/**
 * A CNI plugin of our own in `<dir>/cni-bin` whose DEL fails (a CNI error on stdout, exit 1) until the
 * file `marker` exists; ADD passes the previous result on, CHECK succeeds. Returns the bin dir.
 */
export function writeFailingDelPlugin(dir: string, marker: string, name = 'skpod-faildel'): Promise<string> {
  return writePlugin(
    dir,
    name,
    `  if (cmd === 'ADD') return console.log(JSON.stringify({ cniVersion: conf.cniVersion, ...conf.prevResult }));
  if (cmd === 'DEL' && !existsSync(${JSON.stringify(marker)})) {
    console.log(JSON.stringify({ cniVersion: conf.cniVersion, code: 999, msg: 'skpod-faildel: DEL refused on purpose' }));
    process.exitCode = 1;
  }`,
  );
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
    const out = execFileSync('ip', ['-o', 'link', 'show', 'master', net.bridge], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split('\n').filter(Boolean);
  } catch {
    return [];
  }
}
