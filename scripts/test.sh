#!/usr/bin/env bash
# The test command: prepares the machine (scripts/setup.sh), then lint + type check + the whole suite
# (unit tests and integration tests against a real daemon, registry, runc/crun, conmon and CNI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run lint
npm run typecheck
npx vitest run "$@"
