// Whether the host runs systemd, for the systemd cgroup driver.
import { pathExists } from './fs.js';

/** True when systemd is PID 1 (the check `sd_booted()` makes). */
export function systemdRunning(): Promise<boolean> {
  return pathExists('/run/systemd/system');
}
