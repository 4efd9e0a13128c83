// Checks a pod record read back from disk: anything that is not a whole record is rejected (and moved
// aside by the store) instead of crashing the daemon later.
import type { PodRecord } from '../store/records.js';

export function validatePodRecord(value: unknown): PodRecord {
  const fail = (why: string): never => {
    throw new Error(`not a pod record: ${why}`);
  };
  if (typeof value !== 'object' || value === null) fail('not an object');
  const r = value as Partial<PodRecord>;
  if (typeof r.id !== 'string' || !/^[0-9a-f]{64}$/.test(r.id)) fail('bad id');
  if (typeof r.config !== 'object' || r.config === null || typeof r.config.metadata !== 'object' || r.config.metadata === null) fail('no config.metadata');
  if (r.state !== 'ready' && r.state !== 'notready') fail('bad state');
  if (typeof r.createdAt !== 'string' || !/^\d+$/.test(r.createdAt)) fail('bad createdAt');
  if (typeof r.handler !== 'string') fail('bad handler');
  if (typeof r.namespaces !== 'object' || r.namespaces === null) fail('bad namespaces');
  if (typeof r.files !== 'object' || r.files === null) fail('bad files');
  if (!Array.isArray(r.ips) || r.ips.some((ip) => typeof ip !== 'string')) fail('bad ips');
  if (typeof r.cgroupParent !== 'string') fail('bad cgroupParent');
  return r as PodRecord;
}
