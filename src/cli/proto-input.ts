// Reads a CRI message (a pod or container config) from a JSON or YAML file the way crictl does: field
// names may be the proto names (log_directory) or their JSON names (logDirectory), enums by name or
// number. The file is checked against the proto's own descriptors, so a misspelt field is an error
// naming its path instead of being silently dropped on the wire.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { criPackageDefinition } from '../cri/proto.js';
import { errorMessage } from '../errors.js';
import { isObject } from '../util/json.js';

interface FieldDescriptor {
  name: string;
  label: string;
  type: string;
  typeName: string;
  jsonName: string;
}
interface MessageDescriptor {
  name: string;
  field: FieldDescriptor[];
  nestedType: (MessageDescriptor & { options: { mapEntry?: boolean } | null })[];
}
interface EnumDescriptor {
  value: { name: string; number: number }[];
}
type Definitions = Record<string, { type?: unknown }>;

const PACKAGE = 'runtime.v1';
let definitions: Definitions | undefined;

function defs(): Definitions {
  // the same parse the gRPC client uses: one per process
  definitions ??= criPackageDefinition() as unknown as Definitions;
  return definitions;
}

const camel = (s: string) => s.replace(/_([a-zA-Z0-9])/g, (_m, c: string) => c.toUpperCase());

/** A field's message type: nested in its parent (map entries) or a package-level message. */
function resolveMessage(parent: MessageDescriptor, typeName: string): { desc: MessageDescriptor; mapEntry: boolean } {
  const nested = parent.nestedType.find((n) => n.name === typeName);
  if (nested) return { desc: nested, mapEntry: nested.options?.mapEntry === true };
  const top = defs()[`${PACKAGE}.${typeName}`]?.type as MessageDescriptor | undefined;
  if (!top) throw new Error(`proto type ${typeName} not found`);
  return { desc: top, mapEntry: false };
}

function scalar(field: FieldDescriptor, value: unknown, path: string): unknown {
  const fail = (what: string) => new Error(`${path}: expected ${what}, got ${JSON.stringify(value)}`);
  switch (field.type) {
    case 'TYPE_STRING':
      if (typeof value !== 'string') throw fail('a string');
      return value;
    case 'TYPE_BOOL':
      if (typeof value !== 'boolean') throw fail('true or false');
      return value;
    case 'TYPE_BYTES':
      if (typeof value !== 'string') throw fail('base64 text');
      return Buffer.from(value, 'base64');
    case 'TYPE_DOUBLE':
    case 'TYPE_FLOAT':
      if (typeof value !== 'number') throw fail('a number');
      return value;
    case 'TYPE_ENUM': {
      const e = defs()[`${PACKAGE}.${field.typeName}`]?.type as EnumDescriptor | undefined;
      const names = e?.value.map((v) => v.name) ?? [];
      if (typeof value === 'number' && e?.value.some((v) => v.number === value)) return e.value.find((v) => v.number === value)!.name;
      if (typeof value === 'string' && names.includes(value)) return value;
      throw fail(`one of ${names.join(', ')}`);
    }
    default: {
      // integers; 64-bit ones may be written as strings (protojson does) to keep precision
      const text = typeof value === 'number' ? String(value) : value;
      if (typeof text !== 'string' || !/^-?\d+$/.test(text)) throw fail('an integer');
      if (field.type.includes('64')) return text;
      return Number(text);
    }
  }
}

function convertMessage(desc: MessageDescriptor, value: unknown, path: string): Record<string, unknown> {
  if (!isObject(value)) throw new Error(`${path || 'the document'}: expected an object`);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const field = desc.field.find((f) => f.name === key || camel(f.name) === key || (f.jsonName !== '' && f.jsonName === key));
    const here = path ? `${path}.${key}` : key;
    if (!field) throw new Error(`${here}: unknown field`);
    if (v === null) continue;
    out[field.name] = convertField(desc, field, v, here);
  }
  return out;
}

function convertField(parent: MessageDescriptor, field: FieldDescriptor, v: unknown, path: string): unknown {
  const one = (item: unknown, p: string) => (field.type === 'TYPE_MESSAGE' ? convertMessage(resolveMessage(parent, field.typeName).desc, item, p) : scalar(field, item, p));
  if (field.type === 'TYPE_MESSAGE' && field.label === 'LABEL_REPEATED') {
    const { desc, mapEntry } = resolveMessage(parent, field.typeName);
    if (mapEntry) {
      if (!isObject(v)) throw new Error(`${path}: expected a map (object)`);
      const valueField = desc.field.find((f) => f.name === 'value')!;
      return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, valueField.type === 'TYPE_MESSAGE' ? convertMessage(resolveMessage(desc, valueField.typeName).desc, item, `${path}.${k}`) : scalar(valueField, item, `${path}.${k}`)]));
    }
  }
  if (field.label === 'LABEL_REPEATED') {
    if (!Array.isArray(v)) throw new Error(`${path}: expected a list`);
    return v.map((item, i) => one(item, `${path}[${i}]`));
  }
  return one(v, path);
}

/** Converts a parsed JSON/YAML document into the CRI message `typeName` (e.g. "PodSandboxConfig"). */
export function fromProtoJson(typeName: string, doc: unknown): Record<string, unknown> {
  const desc = defs()[`${PACKAGE}.${typeName}`]?.type as MessageDescriptor | undefined;
  if (!desc) throw new Error(`proto type ${typeName} not found`);
  return convertMessage(desc, doc, '');
}

/** Reads `file` ('-' = stdin) as JSON or YAML (YAML is a superset, but JSON errors read better) into `typeName`. */
export async function readProtoFile(file: string, typeName: string): Promise<Record<string, unknown>> {
  const text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  let doc: unknown;
  try {
    doc = /^\s*[{[]/.test(text) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON or YAML: ${errorMessage(err)}`);
  }
  try {
    return fromProtoJson(typeName, doc);
  } catch (err) {
    throw new Error(`${file}: ${errorMessage(err)}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
