#!/usr/bin/env bash
# The test command: prepares the machine (scripts/setup.sh), then lint + type check + the whole suite
# (unit tests and integration tests against a real daemon, registry, runc/crun, conmon and CNI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run lint
npm run typecheck
report=$(mktemp /tmp/skiff-vitest.XXXXXX.json)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# One plain closing line that any CI reader understands.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests ?? 0)} skipped`);
' "$report" || echo "tests: 0 passed, 1 failed"
rm -f "$report"
exit "$status"
