// The version reported by Version and `skiff version`: the one in package.json, never a hard-coded copy.
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export const SKIFF_VERSION: string = pkg.version;
export const RUNTIME_NAME = 'skiff';
/** The CRI API version we speak. */
export const CRI_API_VERSION = 'v1';
