// A directory of JSON records, one file per object, each written atomically. Loading tolerates damage:
// a record that cannot be parsed is reported and moved aside, never fatal to the daemon.
import { readdir, readFile, rm, rename, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeJsonAtomic, TEMP_PREFIX } from './atomic.js';
import { errnoCode, errorMessage, invalidArgument } from '../errors.js';

export interface LoadProblem {
  file: string;
  error: string;
}

export class RecordStore<T> {
  constructor(
    readonly dir: string,
    /** Checks a parsed record; throw to reject it as damaged. */
    private readonly validate: (value: unknown) => T,
  ) {}

  private file(id: string): string {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(id)) throw invalidArgument(`invalid record id: ${id.slice(0, 100)}`, { path: this.dir });
    return join(this.dir, `${id}.json`);
  }

  async save(id: string, record: T): Promise<void> {
    await writeJsonAtomic(this.file(id), record);
  }

  async remove(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }

  /** All valid records. Damaged ones are moved to `<dir>/damaged/` and reported; temp leftovers deleted. */
  async loadAll(): Promise<{ records: Map<string, T>; problems: LoadProblem[] }> {
    const records = new Map<string, T>();
    const problems: LoadProblem[] = [];
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { records, problems };
      throw err;
    }
    for (const name of names) {
      const path = join(this.dir, name);
      if (name.startsWith(TEMP_PREFIX)) {
        // a write that a crash interrupted before its rename: the previous record (if any) is intact
        await rm(path, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        const value = this.validate(JSON.parse(await readFile(path, 'utf8')));
        records.set(name.slice(0, -'.json'.length), value);
      } catch (err) {
        problems.push({ file: path, error: errorMessage(err) });
        await mkdir(join(this.dir, 'damaged'), { recursive: true });
        await rename(path, join(this.dir, 'damaged', `${name}.${Date.now()}`)).catch(() => rm(path, { force: true }));
      }
    }
    return { records, problems };
  }
}
