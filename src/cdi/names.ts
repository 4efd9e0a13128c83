// CDI names: the kind `vendor.com/class`, device names, and fully qualified `vendor.com/class=name`.
// Grammar as in the CDI spec; which version allows what is checked in validate.ts.

const VENDOR = /^[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
/** Dots in the class are allowed from 0.6.0 on (validate.ts checks the version). */
const CLASS = /^[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
/** Names starting with a digit are allowed from 0.5.0 on (validate.ts checks the version). */
const DEVICE = /^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$/;

/** Why a kind is malformed, or undefined when it is fine. */
export function kindProblem(kind: string): string | undefined {
  const slash = kind.indexOf('/');
  if (slash <= 0 || slash !== kind.lastIndexOf('/')) return `kind "${kind}" must be "vendor.com/class"`;
  const vendor = kind.slice(0, slash);
  const cls = kind.slice(slash + 1);
  if (!VENDOR.test(vendor)) return `kind "${kind}": invalid vendor "${vendor}" (letters, digits, '_', '-', '.'; starts with a letter, ends with a letter or digit)`;
  if (!CLASS.test(cls)) return `kind "${kind}": invalid class "${cls}" (letters, digits, '_', '-'; starts with a letter, ends with a letter or digit)`;
  return undefined;
}

export function deviceNameProblem(name: string): string | undefined {
  if (!DEVICE.test(name)) return `invalid device name "${name}" (letters, digits, '_', '-', '.', ':'; starts and ends with a letter or digit)`;
  return undefined;
}

export interface QualifiedName {
  kind: string;
  name: string;
}

/** Splits `vendor.com/class=name`; undefined when malformed. */
export function parseQualifiedName(qualified: string): QualifiedName | undefined {
  const eq = qualified.indexOf('=');
  if (eq <= 0) return undefined;
  const kind = qualified.slice(0, eq);
  const name = qualified.slice(eq + 1);
  if (kindProblem(kind) !== undefined || deviceNameProblem(name) !== undefined) return undefined;
  return { kind, name };
}

export function qualifiedName(kind: string, name: string): string {
  return `${kind}=${name}`;
}

export const CDI_ANNOTATION_PREFIX = 'cdi.k8s.io/';

/**
 * Device names requested through the pre-1.28 annotations: `cdi.k8s.io/<key>: "vendor.com/class=a,vendor.com/class=b"`.
 * Returned in annotation-key order so the result does not depend on map order.
 */
export function devicesFromAnnotations(annotations: Record<string, string> | undefined): string[] {
  if (!annotations) return [];
  const out: string[] = [];
  for (const key of Object.keys(annotations).sort()) {
    if (!key.startsWith(CDI_ANNOTATION_PREFIX)) continue;
    for (const part of annotations[key].split(',')) {
      const name = part.trim();
      if (name !== '') out.push(name);
    }
  }
  return out;
}

/** All devices a container asks for: CDI_devices first (1.28+), then the annotations; duplicates dropped. */
export function requestedCdiDevices(config: { CDI_devices?: { name?: string }[] | null; annotations?: Record<string, string> | null }): string[] {
  const names = [...(config.CDI_devices ?? []).map((d) => d.name ?? ''), ...devicesFromAnnotations(config.annotations ?? undefined)];
  return [...new Set(names.filter((n) => n !== ''))];
}
