#!/usr/bin/env node
// `npm run bench` lists the benchmarks (bench/*.bench.mjs) and runs them all; `npm run bench -- NAME...`
// runs the named ones, `npm run bench -- --list` only lists. Benches drive the built code (dist/), so the
// tree is built first when dist/ is missing. They are not part of `npm test`.
import { readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const files = (await readdir(here)).filter((f) => f.endsWith('.bench.mjs')).sort();
const benches = [];
for (const f of files) {
  const mod = await import(pathToFileURL(join(here, f)).href);
  benches.push({ name: f.replace(/\.bench\.mjs$/, ''), description: mod.description ?? '', run: mod.run });
}

const args = process.argv.slice(2);
console.log('benchmarks:');
for (const b of benches) console.log(`  ${b.name.padEnd(20)} ${b.description}`);
if (args.includes('--list')) process.exit(0);

const wanted = args.filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !benches.some((b) => b.name === w));
if (unknown.length) {
  console.error(`no such benchmark: ${unknown.join(', ')}`);
  process.exit(2);
}
if (!existsSync(join(root, 'dist/cli/main.js'))) {
  console.log('building (dist/ is missing) ...');
  const r = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
let failed = 0;
for (const b of benches.filter((x) => wanted.length === 0 || wanted.includes(x.name))) {
  console.log(`\n=== ${b.name}`);
  try {
    await b.run({ root, args: args.filter((a) => a.startsWith('-')) });
  } catch (err) {
    failed++;
    console.error(`${b.name} failed: ${err?.stack ?? err}`);
  }
}
process.exit(failed ? 1 : 0);
