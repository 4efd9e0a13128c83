// Files a pod's containers get bind-mounted: /etc/hostname, /etc/hosts, /etc/resolv.conf. A pod on the
// host network gets the host's hosts and resolv.conf; otherwise DNSConfig decides resolv.conf.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../store/atomic.js';
import { invalidArgument } from '../errors.js';
import type { DNSConfig__Output } from '../gen/runtime/v1/DNSConfig.js';

const LOCALHOST_HOSTS = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::0\tip6-localnet',
  'fe00::0\tip6-mcastprefix',
  'fe00::1\tip6-allnodes',
  'fe00::2\tip6-allrouters',
];

/** resolv.conf text for DNSConfig; undefined when the config asks for nothing (use the host's). */
export function resolvConfText(dns: DNSConfig__Output | null): string | undefined {
  if (!dns || (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0)) return undefined;
  for (const v of [...dns.servers, ...dns.searches, ...dns.options]) {
    if (/[\s\0]/.test(v) || v === '') throw invalidArgument(`dns_config: "${v}" must be a single word`);
  }
  const lines: string[] = [];
  if (dns.searches.length > 0) lines.push(`search ${dns.searches.join(' ')}`);
  for (const s of dns.servers) lines.push(`nameserver ${s}`);
  if (dns.options.length > 0) lines.push(`options ${dns.options.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

export function hostsText(hostname: string, ips: readonly string[]): string {
  const own = /^[^\s#]+$/.test(hostname) ? ips.map((ip) => `${ip}\t${hostname}`) : [];
  return `${[...LOCALHOST_HOSTS, ...own].join('\n')}\n`;
}

export interface PodFiles {
  hostname: string;
  hosts: string;
  resolvConf: string;
}

export async function writePodFiles(
  dir: string,
  opts: { hostname: string; hostNetwork: boolean; ips: readonly string[]; dns: DNSConfig__Output | null },
): Promise<PodFiles> {
  const files: PodFiles = { hostname: join(dir, 'hostname'), hosts: join(dir, 'hosts'), resolvConf: join(dir, 'resolv.conf') };
  await writeFileAtomic(files.hostname, `${opts.hostname}\n`);
  const hostHosts = opts.hostNetwork ? await readFile('/etc/hosts', 'utf8').catch(() => undefined) : undefined;
  await writeFileAtomic(files.hosts, hostHosts ?? hostsText(opts.hostname, opts.ips));
  const resolv = resolvConfText(opts.dns) ?? (await readFile('/etc/resolv.conf', 'utf8').catch(() => ''));
  await writeFileAtomic(files.resolvConf, resolv);
  return files;
}
