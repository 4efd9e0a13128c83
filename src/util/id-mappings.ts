// uid/gid mappings as the kernel takes them in /proc/<pid>/uid_map (and in an idmapped mount): checked up
// front so that a mapping the kernel would refuse is INVALID_ARGUMENT naming the entry, not an EINVAL from
// a write deep inside pod or container setup.
import { invalidArgument } from '../errors.js';

/** Lines the kernel takes in one uid_map or gid_map (since Linux 4.15). */
export const MAX_ID_MAPPINGS = 340;
/** (uid_t)-1 means "no id": a range may reach up to the id below it. */
const ID_LIMIT = 2 ** 32 - 1;

export interface IdRange {
  container_id: number;
  host_id: number;
  length: number;
}

/** Refuses what the kernel would: no entries or too many, empty ranges, ranges past 32-bit ids, overlaps on either side. */
export function checkIdMappings<T extends IdRange>(list: readonly T[], what: string): readonly T[] {
  if (list.length === 0) throw invalidArgument(`${what}: no mappings`);
  if (list.length > MAX_ID_MAPPINGS) throw invalidArgument(`${what}: ${list.length} mappings, the kernel takes at most ${MAX_ID_MAPPINGS}`);
  list.forEach((m, i) => {
    if (!(m.length > 0)) throw invalidArgument(`${what}[${i}]: length must be > 0`);
    if (m.host_id + m.length > ID_LIMIT || m.container_id + m.length > ID_LIMIT) throw invalidArgument(`${what}[${i}]: range exceeds 32-bit ids`);
  });
  for (const side of ['container_id', 'host_id'] as const) {
    const sorted = [...list].sort((a, b) => a[side] - b[side]);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i][side] < sorted[i - 1][side] + sorted[i - 1].length) {
        throw invalidArgument(`${what}: ${side === 'host_id' ? 'host' : 'container'} ranges starting at ${sorted[i - 1][side]} and ${sorted[i][side]} overlap`);
      }
    }
  }
  return list;
}
