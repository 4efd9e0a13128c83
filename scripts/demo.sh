#!/usr/bin/env bash
# The demo: prepares the machine, starts a skiff daemon on a scratch root, talks CRI to it with the
# skiff client, and cleans everything up. It grows as the runtime grows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
sock="$work/skiff.sock"
skiff() { node bin/skiff -r "unix://$sock" "$@"; }
cleanup() {
  [ -n "${daemon_pid:-}" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting skiff daemon (root $work/root)"
node bin/skiff daemon --root "$work/root" --state "$work/state" --socket "$sock" --log-level warn &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done

echo "== skiff version";         skiff version
echo "== skiff info";            skiff info -o yaml
echo "== skiff runtime-config";  skiff runtime-config
echo "== stopping the daemon"
