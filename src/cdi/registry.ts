// The CDI registry: every spec file of the configured dirs, re-read when a file changes (checked on each
// use: a readdir + stat per file, no watcher to leak or miss events). Devices are indexed by qualified
// name; a later dir overrides an earlier one; the same device in two files of one dir is a conflict that
// makes it unusable until fixed. A broken file is reported and skipped; it never hides the good ones.
import { open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join, extname } from 'node:path';
import { errnoCode, errorMessage, failedPrecondition, invalidArgument } from '../errors.js';
import { parseSpecFile } from './spec-file.js';
import { parseQualifiedName, qualifiedName, requestedCdiDevices } from './names.js';
import { completeDeviceNodes } from './oci-edits.js';
import { describeSpecError, type CdiContainerEdits, type CdiDevice, type LoadedSpec, type SpecFileError } from './types.js';

const SPEC_EXTENSIONS = new Set(['.json', '.yaml', '.yml']);
/**
 * A spec file's size limit. Real ones (a node's GPUs, their MIG slices) are tens of KiB; a 10 MB one took
 * the daemon's event loop for seconds and a 100 MB one its whole heap, on every CDI request.
 */
export const MAX_SPEC_FILE_BYTES = 2 * 1024 * 1024;

/**
 * Reads a spec file through one open file, never blocking: the path may be swapped for a FIFO or a device
 * after it was looked at, so what is read is what was opened (O_NONBLOCK), checked to be a regular file of
 * at most MAX_SPEC_FILE_BYTES.
 */
export async function readSpecFileSafely(path: string): Promise<{ text: string } | { error: string }> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    return { error: `cannot open: ${errorMessage(err)}` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { error: 'not a regular file' };
    const tooBig = `larger than ${MAX_SPEC_FILE_BYTES} bytes: not read`;
    if (st.size > MAX_SPEC_FILE_BYTES) return { error: tooBig };
    // one byte past its size: a file still being written reads as cut (a parse error now, re-read once its
    // writer is done and its size or mtime changed)
    const buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = (await fh.read(buf, n, buf.length - n, n)).bytesRead;
    if (n > MAX_SPEC_FILE_BYTES) return { error: tooBig };
    return { text: buf.toString('utf8', 0, n) };
  } catch (err) {
    return { error: `cannot read: ${errorMessage(err)}` };
  } finally {
    await fh.close();
  }
}

interface CachedFile {
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  size: number;
  spec?: LoadedSpec;
  errors: SpecFileError[];
}

export interface IndexedDevice {
  qualifiedName: string;
  device: CdiDevice;
  /** The file that defines it (and whose spec-level edits come with it). */
  source: LoadedSpec;
}

export interface Conflict {
  qualifiedName: string;
  files: string[];
  /** Index of the dir the conflicting files are in. */
  priority: number;
}

export interface RegistrySnapshot {
  devices: Map<string, IndexedDevice>;
  conflicts: Map<string, Conflict>;
  errors: SpecFileError[];
  specs: LoadedSpec[];
}

/** The edits for one container: each device's edits plus its spec's common edits, in request order. */
export interface ResolvedCdi {
  devices: string[];
  edits: CdiContainerEdits[];
}

export class CdiRegistry {
  private readonly cache = new Map<string, CachedFile>();

  constructor(private readonly dirs: readonly string[]) {}

  /** Re-reads changed files and returns the current view. */
  async refresh(): Promise<RegistrySnapshot> {
    const specs: LoadedSpec[] = [];
    const errors: SpecFileError[] = [];
    const present = new Set<string>();
    for (const [priority, dir] of this.dirs.entries()) {
      let names: string[];
      try {
        names = (await readdir(dir)).filter((n) => SPEC_EXTENSIONS.has(extname(n)) && !n.startsWith('.')).sort();
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') errors.push({ path: dir, message: `cannot read CDI spec dir: ${errorMessage(err)}` });
        continue;
      }
      for (const name of names) {
        const path = join(dir, name);
        present.add(path);
        const file = await this.load(path, priority);
        if (file.spec) specs.push(file.spec);
        errors.push(...file.errors);
      }
    }
    for (const path of this.cache.keys()) if (!present.has(path)) this.cache.delete(path);
    return { ...index(specs), errors, specs };
  }

  private async load(path: string, priority: number): Promise<CachedFile> {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      return { mtimeMs: 0, ctimeMs: 0, ino: 0, size: 0, errors: [{ path, message: `cannot stat: ${errorMessage(err)}` }] };
    }
    const cached = this.cache.get(path);
    // A rename over the file (ino), a write (mtime/size) or a touch of its metadata (ctime) all re-read it.
    const same = cached && cached.mtimeMs === st.mtimeMs && cached.ctimeMs === st.ctimeMs && cached.ino === st.ino && cached.size === st.size;
    if (same && (cached.spec?.priority ?? priority) === priority) return cached;
    const id = { mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, size: st.size };
    let entry: CachedFile;
    const read = await readSpecFileSafely(path);
    if ('error' in read) {
      entry = { ...id, errors: [{ path, message: read.error }] };
    } else {
      try {
        const parsed = parseSpecFile(path, read.text);
        entry = { ...id, errors: parsed.errors, spec: parsed.spec && { path, priority, spec: parsed.spec } };
      } catch (err) {
        entry = { ...id, errors: [{ path, message: `cannot parse: ${errorMessage(err)}` }] };
      }
    }
    this.cache.set(path, entry);
    return entry;
  }

  /**
   * The CDI devices a container asks for (CDI_devices, then cdi.k8s.io/* annotations) as edits ready for
   * the spec builder: device nodes completed with type and numbers read from the host.
   */
  async resolveForContainer(config: Parameters<typeof requestedCdiDevices>[0]): Promise<ResolvedCdi> {
    const r = await this.resolve(requestedCdiDevices(config));
    return r.edits.length === 0 ? r : { devices: r.devices, edits: await completeDeviceNodes(r.edits) };
  }

  /**
   * Resolves qualified device names to edits. Malformed names are INVALID_ARGUMENT; unknown or conflicting
   * ones FAILED_PRECONDITION naming every such device and the errors of spec files for its kind.
   */
  async resolve(names: readonly string[]): Promise<ResolvedCdi> {
    if (names.length === 0) return { devices: [], edits: [] };
    for (const n of names) {
      if (!parseQualifiedName(n)) throw invalidArgument(`CDI device "${n}" is not a qualified name (vendor.com/class=name)`, { device: n });
    }
    const snap = await this.refresh();
    const problems: string[] = [];
    const edits: CdiContainerEdits[] = [];
    const specsUsed = new Set<LoadedSpec>();
    for (const n of names) {
      const conflict = snap.conflicts.get(n);
      const found = snap.devices.get(n);
      if (conflict) {
        problems.push(`CDI device "${n}" is defined in more than one file of the same dir: ${conflict.files.join(' and ')}`);
      } else if (!found) {
        const kind = parseQualifiedName(n)!.kind;
        const related = snap.errors.filter((e) => e.kind === kind || e.kind === undefined);
        const detail = related.length > 0 ? `; spec file errors: ${related.map(describeSpecError).join('; ')}` : '';
        problems.push(`unresolvable CDI device "${n}" (no spec file in ${this.dirs.join(', ')} defines it${detail})`);
      } else {
        // The spec-level edits apply once per spec file, however many of its devices are used.
        if (!specsUsed.has(found.source) && found.source.spec.containerEdits) edits.push(found.source.spec.containerEdits);
        specsUsed.add(found.source);
        edits.push(found.device.containerEdits);
      }
    }
    if (problems.length > 0) throw failedPrecondition(problems.join('; '), { device: names.join(',') });
    return { devices: [...names], edits };
  }
}

/** Builds the device index: higher priority wins; equal priority from two files is a conflict. */
function index(specs: LoadedSpec[]): { devices: Map<string, IndexedDevice>; conflicts: Map<string, Conflict> } {
  const devices = new Map<string, IndexedDevice>();
  const conflicts = new Map<string, Conflict>();
  for (const source of specs) {
    for (const device of source.spec.devices) {
      const qn = qualifiedName(source.spec.kind, device.name);
      const existing = devices.get(qn);
      const conflict = conflicts.get(qn);
      if (conflict && conflict.priority === source.priority) {
        conflict.files.push(source.path);
        continue;
      }
      if (existing && existing.source.priority === source.priority) {
        conflicts.set(qn, { qualifiedName: qn, files: [existing.source.path, source.path], priority: source.priority });
        devices.delete(qn);
        continue;
      }
      // Files are visited in dir order, so a later dir (higher priority) replaces an earlier definition or conflict.
      if (conflict) conflicts.delete(qn);
      devices.set(qn, { qualifiedName: qn, device, source });
    }
  }
  return { devices, conflicts };
}
