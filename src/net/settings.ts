// Node-level network settings that kubelet pushes with UpdateRuntimeConfig (the pod CIDR), persisted so a
// restarted daemon keeps them.
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeJsonAtomic } from '../store/atomic.js';
import { invalidArgument, errnoCode, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';

interface Persisted {
  podCidrs: string[];
}

const CIDR = /^(?:(?:\d{1,3}\.){3}\d{1,3}\/(?:[0-9]|[12][0-9]|3[0-2])|[0-9a-fA-F:]+\/(?:[0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$/;

export class NetworkSettings {
  private podCidrs: string[] = [];
  private readonly file: string;

  constructor(stateDir: string) {
    this.file = join(stateDir, 'network-settings.json');
  }

  /**
   * A damaged file must not keep the daemon from starting (as with records): it is moved aside and the
   * daemon starts with no pod CIDRs; kubelet sends them again with its next UpdateRuntimeConfig.
   */
  async load(log?: Logger): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    try {
      const saved = JSON.parse(text) as Partial<Persisted>;
      if (Array.isArray(saved.podCidrs)) this.podCidrs = saved.podCidrs.filter((c) => typeof c === 'string');
    } catch (err) {
      const aside = `${this.file}.damaged.${Date.now()}`;
      await rename(this.file, aside).catch(() => rm(this.file, { force: true }));
      log?.warn({ file: this.file, movedTo: aside, err: errorMessage(err) }, 'network settings damaged; starting with no pod CIDRs');
    }
  }

  /** kubelet sends a comma-separated list ("10.0.0.0/24,fd00::/64"); an empty string changes nothing. */
  async setPodCidr(value: string): Promise<void> {
    if (value === '') return;
    const list = value.split(',').map((s) => s.trim()).filter(Boolean);
    for (const c of list) {
      if (!CIDR.test(c)) throw invalidArgument(`pod_cidr: "${c}" is not a CIDR`);
    }
    this.podCidrs = list;
    await writeJsonAtomic(this.file, { podCidrs: list } satisfies Persisted);
  }

  get cidrs(): readonly string[] {
    return this.podCidrs;
  }
}
