// House rule: src/cri validates and translates only. It never touches disk or runs commands itself; that
// work sits behind the runtime handlers, src/net and src/util, whose results cri translates.
import { describe, it, expect } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

const SRC = resolve(import.meta.dirname, '../../src');
const FORBIDDEN = /from '(node:fs(\/promises)?|node:child_process|\.\.\/util\/(which|exec)\.js)'/;

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await files(join(dir, e.name))));
    else if (e.name.endsWith('.ts')) out.push(join(dir, e.name));
  }
  return out;
}

describe('layering', () => {
  it('src/cri imports no file-system or process module', async () => {
    const bad: string[] = [];
    for (const f of await files(join(SRC, 'cri'))) {
      for (const line of (await readFile(f, 'utf8')).split('\n')) if (FORBIDDEN.test(line)) bad.push(`${f}: ${line}`);
    }
    expect(bad).toEqual([]);
  });

  it('nothing outside src/cri takes host checks from src/cri/runtime-info', async () => {
    const bad: string[] = [];
    for (const f of await files(SRC)) {
      if (f.startsWith(join(SRC, 'cri'))) continue;
      for (const line of (await readFile(f, 'utf8')).split('\n')) if (/from '\.\.\/cri\/runtime-info\.js'/.test(line)) bad.push(`${f}: ${line}`);
    }
    expect(bad).toEqual([]);
  });
});
