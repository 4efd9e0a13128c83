// Parses and validates one CDI spec file. Every problem is reported with the file and the line it points
// at, so an operator can fix the file from the error alone. Pure: takes the file's text, does no I/O.
import { LineCounter, parseDocument, isMap, isSeq, isPair, isScalar, type Node } from 'yaml';
import { CDI_VERSIONS, type CdiSpec, type SpecFileError } from './types.js';
import { kindProblem, deviceNameProblem } from './names.js';
import { isObject } from '../util/json.js';

type Path = (string | number)[];
interface Problem {
  path: Path;
  message: string;
  /** Point at the key itself (unknown fields), not its value. */
  atKey?: boolean;
}

export interface ParsedSpecFile {
  spec?: CdiSpec;
  errors: SpecFileError[];
}

const HOOK_NAMES = ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop'];
const EDIT_FIELDS = ['env', 'deviceNodes', 'hooks', 'mounts', 'additionalGids', 'intelRdt'];

/** The spec versions as comparable numbers: 0.5.0 -> 500. */
function versionNumber(v: string): number {
  const [maj, min, patch] = v.split('.').map(Number);
  return (maj ?? 0) * 10000 + (min ?? 0) * 100 + (patch ?? 0);
}

class Checker {
  readonly problems: Problem[] = [];
  /** Highest spec version a used field needs, with the field that needs it. */
  needed = { version: '0.3.0', why: '' };

  fail(path: Path, message: string, atKey = false): void {
    this.problems.push({ path, message, atKey });
  }

  need(version: string, path: Path, why: string): void {
    if (versionNumber(version) > versionNumber(this.needed.version)) this.needed = { version, why: `${why} (at ${formatPath(path)})` };
  }

  fields(obj: Record<string, unknown>, path: Path, allowed: string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.fail([...path, k], `unknown field "${k}"`, true);
    }
  }

  string(obj: Record<string, unknown>, key: string, path: Path, required: boolean): string | undefined {
    const v = obj[key];
    if (v === undefined || v === null) {
      if (required) this.fail(path, `missing required field "${key}"`);
      return undefined;
    }
    if (typeof v !== 'string') {
      this.fail([...path, key], `"${key}" must be a string`);
      return undefined;
    }
    if (required && v === '') this.fail([...path, key], `"${key}" must not be empty`);
    // no program, path or environment can hold a NUL: the runtime would fail on it later
    if (v.includes('\0')) this.fail([...path, key], `"${key}" contains a NUL byte`);
    return v;
  }

  int(obj: Record<string, unknown>, key: string, path: Path, min: number, max: number): void {
    const v = obj[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail([...path, key], `"${key}" must be an integer from ${min} to ${max}`);
  }

  stringList(obj: Record<string, unknown>, key: string, path: Path): string[] {
    const v = obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
      this.fail([...path, key], `"${key}" must be a list of strings`);
      return [];
    }
    if ((v as string[]).some((s) => s.includes('\0'))) this.fail([...path, key], `"${key}" contains a NUL byte`);
    return v as string[];
  }

  stringMap(obj: Record<string, unknown>, key: string, path: Path): boolean {
    const v = obj[key];
    if (v === undefined || v === null) return false;
    if (!isObject(v) || Object.values(v).some((s) => typeof s !== 'string')) {
      this.fail([...path, key], `"${key}" must be a map of strings`);
      return false;
    }
    return Object.keys(v).length > 0;
  }

  list(obj: Record<string, unknown>, key: string, path: Path): unknown[] {
    const v = obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.fail([...path, key], `"${key}" must be a list`);
      return [];
    }
    return v;
  }

  /** Checks containerEdits; returns whether it edits anything. */
  edits(v: unknown, path: Path): boolean {
    if (!isObject(v)) {
      this.fail(path, 'containerEdits must be a map');
      return false;
    }
    this.fields(v, path, EDIT_FIELDS);
    let edits = 0;
    for (const [i, e] of this.stringList(v, 'env', path).entries()) {
      edits++;
      if (!/^[^=]+=/.test(e)) this.fail([...path, 'env', i], `env entry "${e}" must be KEY=VALUE`);
    }
    for (const [i, n] of this.list(v, 'deviceNodes', path).entries()) {
      edits++;
      this.deviceNode(n, [...path, 'deviceNodes', i]);
    }
    for (const [i, m] of this.list(v, 'mounts', path).entries()) {
      edits++;
      this.mount(m, [...path, 'mounts', i]);
    }
    for (const [i, h] of this.list(v, 'hooks', path).entries()) {
      edits++;
      this.hook(h, [...path, 'hooks', i]);
    }
    const gids = this.list(v, 'additionalGids', path);
    for (const [i, g] of gids.entries()) {
      edits++;
      if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > 0xffffffff) this.fail([...path, 'additionalGids', i], 'additional GIDs must be integers from 0 to 4294967295');
    }
    if (gids.length > 0) this.need('0.7.0', [...path, 'additionalGids'], 'additionalGids');
    if (v.intelRdt !== undefined && v.intelRdt !== null) {
      edits++;
      if (!isObject(v.intelRdt)) this.fail([...path, 'intelRdt'], '"intelRdt" must be a map');
      this.need('0.7.0', [...path, 'intelRdt'], 'intelRdt');
    }
    return edits > 0;
  }

  deviceNode(n: unknown, path: Path): void {
    if (!isObject(n)) return this.fail(path, 'a device node must be a map');
    this.fields(n, path, ['path', 'hostPath', 'type', 'major', 'minor', 'fileMode', 'permissions', 'uid', 'gid']);
    const p = this.string(n, 'path', path, true);
    if (p !== undefined && p !== '' && !p.startsWith('/')) this.fail([...path, 'path'], `device path "${p}" must be absolute`);
    const host = this.string(n, 'hostPath', path, false);
    if (host !== undefined && host !== '') {
      this.need('0.5.0', [...path, 'hostPath'], 'deviceNodes[].hostPath');
      if (!host.startsWith('/')) this.fail([...path, 'hostPath'], `hostPath "${host}" must be absolute`);
    }
    const type = this.string(n, 'type', path, false);
    if (type !== undefined && type !== '' && !['b', 'c', 'u', 'p'].includes(type)) this.fail([...path, 'type'], `device type "${type}" must be one of b, c, u, p`);
    // Linux device numbers: 12 bits of major, 20 of minor
    this.int(n, 'major', path, 0, 4095);
    this.int(n, 'minor', path, 0, 1048575);
    if (type === 'p' && (n.major !== undefined || n.minor !== undefined)) this.fail(path, 'a fifo ("p") device node takes no major/minor');
    this.int(n, 'fileMode', path, 0, 0o7777);
    this.int(n, 'uid', path, 0, 0xffffffff);
    this.int(n, 'gid', path, 0, 0xffffffff);
    const perms = this.string(n, 'permissions', path, false);
    if (perms !== undefined && perms !== '' && !/^[rwm]{1,3}$/.test(perms)) this.fail([...path, 'permissions'], `permissions "${perms}" must be made of r, w, m`);
  }

  mount(m: unknown, path: Path): void {
    if (!isObject(m)) return this.fail(path, 'a mount must be a map');
    this.fields(m, path, ['hostPath', 'containerPath', 'options', 'type']);
    const hp = this.string(m, 'hostPath', path, true);
    if (hp !== undefined && hp !== '' && !hp.startsWith('/')) this.fail([...path, 'hostPath'], `hostPath "${hp}" must be absolute`);
    const cp = this.string(m, 'containerPath', path, true);
    if (cp !== undefined && cp !== '' && !cp.startsWith('/')) this.fail([...path, 'containerPath'], `containerPath "${cp}" must be absolute`);
    this.stringList(m, 'options', path);
    const type = this.string(m, 'type', path, false);
    if (type !== undefined && type !== '') this.need('0.4.0', [...path, 'type'], 'mounts[].type');
  }

  hook(h: unknown, path: Path): void {
    if (!isObject(h)) return this.fail(path, 'a hook must be a map');
    this.fields(h, path, ['hookName', 'path', 'args', 'env', 'timeout']);
    const name = this.string(h, 'hookName', path, true);
    if (name !== undefined && name !== '' && !HOOK_NAMES.includes(name)) this.fail([...path, 'hookName'], `hookName "${name}" must be one of ${HOOK_NAMES.join(', ')}`);
    const p = this.string(h, 'path', path, true);
    if (p !== undefined && p !== '' && !p.startsWith('/')) this.fail([...path, 'path'], `hook path "${p}" must be absolute`);
    this.stringList(h, 'args', path);
    this.stringList(h, 'env', path);
    this.int(h, 'timeout', path, 1, 2 ** 31 - 1);
  }
}

function formatPath(path: Path): string {
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('').replace(/^\./, '');
}

/** Validates a parsed document; problems carry a path into it. Exported for unit tests. */
export function checkSpec(doc: unknown): { problems: Problem[]; spec?: CdiSpec; kind?: string } {
  const c = new Checker();
  if (!isObject(doc)) {
    c.fail([], 'a CDI spec must be a map with cdiVersion, kind and devices');
    return { problems: c.problems };
  }
  c.fields(doc, [], ['cdiVersion', 'kind', 'annotations', 'devices', 'containerEdits']);
  const version = c.string(doc, 'cdiVersion', [], true);
  if (version !== undefined && version !== '' && !(CDI_VERSIONS as readonly string[]).includes(version)) {
    c.fail(['cdiVersion'], `unsupported cdiVersion "${version}" (supported: ${CDI_VERSIONS.join(', ')})`);
  }
  const kind = c.string(doc, 'kind', [], true);
  if (kind !== undefined && kind !== '') {
    const why = kindProblem(kind);
    if (why) c.fail(['kind'], why);
    else if (kind.slice(kind.indexOf('/') + 1).includes('.')) c.need('0.6.0', ['kind'], 'a "." in the kind\'s class');
  }
  if (c.stringMap(doc, 'annotations', [])) c.need('0.6.0', ['annotations'], 'spec annotations');
  if (doc.containerEdits !== undefined && doc.containerEdits !== null) c.edits(doc.containerEdits, ['containerEdits']);
  const devices = c.list(doc, 'devices', []);
  if (doc.devices === undefined) c.fail([], 'missing required field "devices"');
  const seen = new Map<string, number>();
  for (const [i, d] of devices.entries()) {
    const path = ['devices', i];
    if (!isObject(d)) {
      c.fail(path, 'a device must be a map');
      continue;
    }
    c.fields(d, path, ['name', 'annotations', 'containerEdits']);
    const name = c.string(d, 'name', path, true);
    if (name !== undefined && name !== '') {
      const why = deviceNameProblem(name);
      if (why) c.fail([...path, 'name'], why);
      else if (/^[0-9]/.test(name)) c.need('0.5.0', [...path, 'name'], 'a device name starting with a digit');
      const first = seen.get(name);
      if (first !== undefined) c.fail([...path, 'name'], `device "${name}" is defined twice in this file (also devices[${first}])`);
      else seen.set(name, i);
    }
    if (c.stringMap(d, 'annotations', path)) c.need('0.6.0', [...path, 'annotations'], 'device annotations');
    if (d.containerEdits === undefined || d.containerEdits === null) c.fail(path, `device "${name ?? i}" has no containerEdits`);
    else if (!c.edits(d.containerEdits, [...path, 'containerEdits']) && isObject(d.containerEdits)) c.fail([...path, 'containerEdits'], `device "${name ?? i}" has empty containerEdits`);
  }
  if (version !== undefined && (CDI_VERSIONS as readonly string[]).includes(version) && versionNumber(c.needed.version) > versionNumber(version)) {
    c.fail(['cdiVersion'], `cdiVersion "${version}" is too old for ${c.needed.why}: needs at least ${c.needed.version}`);
  }
  const goodKind = kind !== undefined && kindProblem(kind) === undefined ? kind : undefined;
  if (c.problems.length > 0) return { problems: c.problems, kind: goodKind };
  return { problems: [], spec: doc as unknown as CdiSpec, kind: goodKind };
}

/** The offset in the text that a path points at, using the YAML node tree (JSON parses as YAML too). */
function offsetOf(root: Node | null | undefined, path: Path, atKey: boolean): number | undefined {
  let node: unknown = root;
  let best: number | undefined = (root)?.range?.[0];
  for (const [i, seg] of path.entries()) {
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === seg);
      if (!pair) break;
      const keyNode = pair.key as Node;
      if (last && atKey) return keyNode.range?.[0];
      best = keyNode.range?.[0] ?? best;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
    } else {
      break;
    }
    const r = (node as Node | null | undefined)?.range?.[0];
    if (r !== undefined) best = r;
  }
  return best;
}

function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Parses and validates a spec file's text. `path` only labels the errors. */
export function parseSpecFile(path: string, text: string): ParsedSpecFile {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (path.endsWith('.json')) {
    try {
      JSON.parse(text);
    } catch (err) {
      // Node reports "... at position N" (and, in newer versions, line and column).
      const msg = err instanceof Error ? err.message : String(err);
      // Node 20 gives "at position N" for most errors but not all; the YAML parser's position is the fallback.
      const pos = /position (\d+)/.exec(msg);
      const line = pos ? lineAt(text, Number(pos[1])) : doc.errors[0] ? lines.linePos(doc.errors[0].pos[0]).line : undefined;
      return { errors: [{ path, line, message: `invalid JSON: ${msg.split('\n')[0]}` }] };
    }
  }
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    return { errors: [{ path, line: lines.linePos(e.pos[0]).line, message: `invalid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${e.message.split('\n')[0]}` }] };
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  const { problems, spec, kind } = checkSpec(value);
  if (problems.length > 0) {
    return {
      errors: problems.map((p) => {
        const off = offsetOf(doc.contents, p.path, p.atKey ?? false);
        return { path, kind, line: off === undefined ? undefined : lines.linePos(off).line, message: p.message };
      }),
    };
  }
  return { spec, errors: [] };
}
