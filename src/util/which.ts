// PATH lookup, so "runc" in the config finds /usr/sbin/runc the way a shell would.
import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Absolute path of an executable, or undefined. Absolute names are only checked. */
export async function lookPath(name: string, pathEnv = `${process.env.PATH ?? ''}${delimiter}${SYSTEM_PATH}`): Promise<string | undefined> {
  const candidates = isAbsolute(name) || name.includes('/') ? [name] : pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // keep looking
    }
  }
  return undefined;
}
