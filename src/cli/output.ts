// Output in crictl's formats: JSON and YAML use protobuf's JSON names (lowerCamelCase), as crictl does,
// so scripts written against crictl's output keep working.
import { stringify as toYaml } from 'yaml';
import { status as grpcStatus } from '@grpc/grpc-js';
import { errorMessage } from '../errors.js';

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

/** A Unix time in nanoseconds (int64 as a string) as RFC 3339 with nanoseconds, as crictl's inspect shows times. */
export function nanosToRfc3339(nanos: string | number): string {
  const n = BigInt(nanos);
  const secs = n / 1_000_000_000n;
  const frac = (n % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return `${new Date(Number(secs) * 1000).toISOString().slice(0, 19)}${frac ? `.${frac}` : ''}Z`;
}

/** Verbose `info` maps hold JSON documents as strings: parse each one that is JSON, keep the rest. */
export function parseInfo(info: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(info).sort()) {
    const v = info[k];
    try {
      out[k] = JSON.parse(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

/** `key -> value` lines of a string map, sorted, as crictl's table views print labels and annotations. */
export function mapLines(title: string, m: Record<string, string> | undefined): string[] {
  const keys = Object.keys(m ?? {}).sort();
  return keys.length ? [`${title}:`, ...keys.map((k) => `\t${k} -> ${m![k]}`)] : [];
}

/** A gRPC error as crictl prints it (`rpc error: code = NotFound desc = ...`); other errors by message. */
export function describeError(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && 'details' in err && typeof (err as { code: unknown }).code === 'number') {
    const { code, details } = err as { code: number; details: string };
    // grpc-js ends a failed connect with an empty "Resolution note:"; say what to check instead. Only when
    // the channel itself failed: an UNAVAILABLE from the daemon (a registry it could not reach) is its own
    const unreachable = code === Number(grpcStatus.UNAVAILABLE) && /^No connection established\b.*connect (ENOENT|ECONNREFUSED|EACCES)/s.test(details);
    const text = unreachable ? `${details.replace(/\s*Resolution note:\s*$/, '')} (is "skiff daemon" running there? the endpoint comes from -r or CONTAINER_RUNTIME_ENDPOINT)` : details;
    return `rpc error: code = ${grpcStatus[code] ?? code} desc = ${text}`;
  }
  return errorMessage(err);
}

/** How long ago, in the words crictl (docker's go-units) uses: "Less than a second", "3 minutes", "About an hour". */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(ms / 3_600_000 / 24 / 365)} years`;
}

/** "<n> ago" for a Unix time in nanoseconds (int64 as a string). */
export function createdAgo(nanos: string, now = Date.now()): string {
  return `${humanDuration(now - Number(BigInt(nanos) / 1_000_000n))} ago`;
}
