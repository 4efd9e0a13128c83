// Output in crictl's formats: JSON and YAML use protobuf's JSON names (lowerCamelCase), as crictl does,
// so scripts written against crictl's output keep working.
import { stringify as toYaml } from 'yaml';

export type OutputFormat = 'table' | 'json' | 'yaml';

function camel(key: string): string {
  return key.replace(/_([a-zA-Z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Recursively renames snake_case keys to lowerCamelCase (map keys such as labels are left alone). */
export function toProtoJson(value: unknown, renameKeys = true): unknown {
  if (Array.isArray(value)) return value.map((v) => toProtoJson(v));
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      // labels, annotations and info are string maps whose keys are data, not field names
      const keepInner = k === 'labels' || k === 'annotations' || k === 'info' || k === 'label_selector';
      out[renameKeys ? camel(k) : k] = keepInner ? v : toProtoJson(v);
    }
    return out;
  }
  return value;
}

export function formatStructured(value: unknown, format: 'json' | 'yaml'): string {
  const v = toProtoJson(value);
  return format === 'json' ? JSON.stringify(v, null, 2) : toYaml(v).trimEnd();
}

/** A left-aligned table, columns padded like crictl's tabwriter output. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] + 3))).join('').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Kubernetes-style age: 5s, 3m, 2h, 4d. `nanos` is a Unix time in nanoseconds (as a string, int64). */
export function age(nanos: string | number, now = Date.now()): string {
  const ms = Number(BigInt(nanos) / 1_000_000n);
  const s = Math.max(0, Math.floor((now - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
