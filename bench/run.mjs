// `npm run bench`: runs every bench/*.bench.mjs (or those named on the command line) one after the other.
// Each bench prints its own figures and sets a non-zero exit code when it misses its target.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const dir = import.meta.dirname;
const named = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const benches = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.mjs'))
  .filter((f) => named.length === 0 || named.some((n) => f.startsWith(n)))
  .sort();
let failed = 0;
for (const b of benches) {
  console.log(`== ${b}`);
  const r = spawnSync(process.execPath, [join(dir, b), ...process.argv.slice(2).filter((a) => a.startsWith('-'))], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exitCode = failed ? 1 : 0;
