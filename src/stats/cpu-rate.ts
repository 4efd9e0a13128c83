// CPU usage in nano cores (1e9 = one full core) over the time since the previous sample of the same
// cgroup, as the kubelet expects usage_nano_cores. Samples closer than MIN_WINDOW reuse the last rate.
const MIN_WINDOW_NS = 100_000_000n;

interface Sample {
  at: bigint;
  usage: bigint;
  rate?: bigint;
}

export class CpuRateTracker {
  private readonly samples = new Map<string, Sample>();

  /** Returns the rate, or undefined on the first sample of `key` (no window yet). `at` in ns (monotonic). */
  observe(key: string, usageNs: bigint, at: bigint = process.hrtime.bigint()): bigint | undefined {
    const prev = this.samples.get(key);
    if (!prev || usageNs < prev.usage) {
      this.samples.set(key, { at, usage: usageNs });
      return undefined;
    }
    const window = at - prev.at;
    if (window < MIN_WINDOW_NS) return prev.rate;
    const rate = ((usageNs - prev.usage) * 1_000_000_000n) / window;
    this.samples.set(key, { at, usage: usageNs, rate });
    return rate;
  }

  /** Drops samples of keys not in `live` (removed containers/pods). */
  retain(live: Set<string>): void {
    for (const k of this.samples.keys()) if (!live.has(k)) this.samples.delete(k);
  }
}
