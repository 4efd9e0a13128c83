#!/usr/bin/env bash
# The demo: prepares the machine, starts a skiff daemon on a scratch root with a scratch CNI network,
# loads a small image made from the host's busybox, runs a pod whose container prints something, shows
# its logs, execs into it, stops and removes it all, and cleans up (daemon, mounts, bridge, iptables
# rules) whether it succeeds or not. No registry and no internet needed.
# SKIFF_DEMO_SKIP_SETUP=1 skips scripts/setup.sh (when the machine is known to be ready).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIFF_DEMO_SKIP_SETUP:-}" != 1 ]; then
  echo "== preparing the machine: apt packages, npm ci, build (a minute or two the first time) ..."
  bash scripts/setup.sh >/dev/null
fi

work=$(mktemp -d /tmp/skiff-demo.XXXXXX)
sock="$work/skiff.sock"
tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
bridge="skdemo$tag"
subnet="10.94.$((RANDOM % 250)).0/24"
guard="SKDEMO-$tag"   # iptables chain: drops forwarded traffic leaving the demo's 10.94.0.0/16
skiff() { node bin/skiff -r "unix://$sock" "$@"; }
step() { printf '\n== %s\n' "$*"; }

cleanup() {
  local status=$?
  set +e
  if [ -n "${daemon_pid:-}" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    # whatever is left (after a failure half-way): containers and pods first, so nothing outlives the demo
    skiff rm -f -a >/dev/null 2>&1
    skiff rmp -f -a >/dev/null 2>&1
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  # mounts the daemon made below the scratch dir, deepest first
  awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  ip link del "$bridge" 2>/dev/null
  while iptables -w 5 -D FORWARD -j "$guard" 2>/dev/null; do :; done
  iptables -w 5 -F "$guard" 2>/dev/null
  iptables -w 5 -X "$guard" 2>/dev/null
  rm -rf "$work"
  if [ "$status" = 0 ]; then echo; echo "== demo finished; everything cleaned up"; else echo "== demo FAILED (exit $status); cleaned up" >&2; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "a scratch CNI network: bridge $bridge on $subnet (no masquerading; forwarding out of 10.94.0.0/16 dropped)"
iptables -w 5 -N "$guard"
iptables -w 5 -A "$guard" -s 10.94.0.0/16 ! -d 10.94.0.0/16 -j DROP
iptables -w 5 -I FORWARD -j "$guard"
mkdir -p "$work/net.d"
cat >"$work/net.d/10-skdemo.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "skdemo-$tag", "plugins": [
  { "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
    "ipam": { "type": "host-local", "dataDir": "$work/leases", "ranges": [[{ "subnet": "$subnet" }]] } } ] }
EOF
cat >"$work/config.toml" <<EOF
[cni]
conf_dir = "$work/net.d"
EOF

step "starting skiff daemon (root $work/root)"
# its own session: a Ctrl-C meant for the demo must not stop the daemon before the cleanup has used it
setsid node bin/skiff daemon --config "$work/config.toml" --root "$work/root" --state "$work/state" --socket "$sock" --log-level warn &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
skiff version

step "skiff load: an image made from the host's busybox-static (scripts/busybox-image.sh)"
bash scripts/busybox-image.sh "$work/busybox.tar" localhost/skiff-demo/busybox:1
skiff load "$work/busybox.tar"
skiff images

step "skiff run: a pod and a container that prints something"
cat >"$work/pod.json" <<EOF
{ "metadata": { "name": "demo", "namespace": "default", "uid": "skiff-demo-$tag", "attempt": 0 },
  "hostname": "skiff-demo", "log_directory": "$work/logs",
  "labels": { "app": "skiff-demo" } }
EOF
cat >"$work/container.json" <<'EOF'
{ "metadata": { "name": "hello" },
  "image": { "image": "localhost/skiff-demo/busybox:1" },
  "command": ["sh", "-c", "echo \"hello from a skiff container on $(hostname), pod IP $(ip -4 -o addr show eth0 | awk '{print $4}')\"; echo 'this line goes to stderr' >&2; trap 'echo got SIGTERM, bye; exit 0' TERM; while :; do sleep 1; done"],
  "log_path": "hello/0.log",
  "labels": { "app": "skiff-demo", "io.kubernetes.pod.name": "demo", "io.kubernetes.pod.namespace": "default" } }
EOF
cid=$(skiff run --no-pull "$work/container.json" "$work/pod.json")
echo "container $cid"
skiff pods
skiff ps

step "skiff logs $cid"
for _ in $(seq 50); do skiff logs "$cid" 2>&1 | grep -q 'stderr' && break; sleep 0.1; done
skiff logs "$cid"

step "skiff exec -s $cid cat /etc/hostname"
skiff exec -s "$cid" cat /etc/hostname

step "skiff stop (the container's TERM trap answers) and skiff logs --timestamps --tail 1"
skiff stop -t 5 "$cid"
skiff logs --timestamps --tail 1 "$cid"
skiff ps -a

step "removing the container and the pod"
pod=$(skiff pods -q --label app=skiff-demo)
skiff rm "$cid"
skiff stopp "$pod"
skiff rmp "$pod"
skiff pods
