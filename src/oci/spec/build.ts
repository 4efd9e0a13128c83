// Composes the spec steps in order. Each step is a pure (spec, input) -> spec function, unit-tested alone.
import type { OciSpec } from './types.js';
import type { SpecInput } from './input.js';
import { withProcess, withUser } from './process.js';
import { defaultMounts, withPodFiles, withRequestMounts, withRootfs } from './mounts.js';
import { withCgroupsPath, withDevices, withHostname, withNamespaces, withResources } from './linux.js';
import { withSecurity } from './security.js';
import { withCdi } from './cdi.js';
import { withIdmappedMounts, withUserNamespace } from './idmap-mounts.js';

export type SpecStep = (spec: OciSpec, input: SpecInput) => OciSpec;

export const SPEC_STEPS: readonly SpecStep[] = [
  withRootfs,
  withHostname,
  withProcess,
  withUser,
  withPodFiles,
  withRequestMounts,
  withNamespaces,
  withUserNamespace,
  withIdmappedMounts,
  withDevices,
  withCdi,
  withCgroupsPath,
  withResources,
  withSecurity,
  withAnnotations,
];

export function emptySpec(): OciSpec {
  return {
    ociVersion: '1.0.2',
    process: { user: { uid: 0, gid: 0 }, args: [], env: [], cwd: '/' },
    root: { path: 'rootfs' },
    mounts: defaultMounts(),
    linux: { namespaces: [], rootfsPropagation: 'rprivate' },
  };
}

function withAnnotations(spec: OciSpec, input: SpecInput): OciSpec {
  return {
    ...spec,
    annotations: { ...input.config.annotations, 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': input.pod.id },
  };
}

export function buildSpec(input: SpecInput, steps: readonly SpecStep[] = SPEC_STEPS): OciSpec {
  return steps.reduce((spec, step) => step(spec, input), emptySpec());
}
