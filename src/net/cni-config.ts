// Finds the CNI network configuration the way kubelet-era runtimes do: the first file, in lexical order,
// of the conf dir ending in .conflist, .conf or .json.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';

export const CNI_CONFIG_EXTENSIONS = ['.conflist', '.conf', '.json'];

export async function firstCniConfigFile(confDir: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = await readdir(confDir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  const file = names.filter((n) => CNI_CONFIG_EXTENSIONS.some((ext) => n.endsWith(ext))).sort()[0];
  return file === undefined ? undefined : join(confDir, file);
}
