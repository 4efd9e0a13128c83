// The CDI step: applies the container's CDI edits (env, device nodes with their cgroup rules, mounts, hooks,
// additional GIDs). Resolution reads spec files and host device nodes, so it happens before spec building
// (src/cdi: CdiRegistry.resolveForContainer); this step only folds the resolved edits in.
import type { OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { applyCdiEdits } from '../../cdi/oci-edits.js';

export function withCdi(spec: OciSpec, input: SpecInput): OciSpec {
  const edits = input.cdi?.edits ?? [];
  if (edits.length === 0) return spec;
  return applyCdiEdits(spec, edits);
}
