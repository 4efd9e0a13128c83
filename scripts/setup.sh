#!/usr/bin/env bash
# Prepares a fresh Debian (bookworm) machine, as root, for skiff's demo and tests: the OCI runtimes,
# conmon, CNI plugins, a local registry and image tools from apt; npm dependencies from the lock file.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc crun conmon catatonit containernetworking-plugins busybox-static docker-registry
  skopeo umoci zstd attr iproute2 iptables apache2-utils procps util-linux
  golang-go golang-github-docker-spdystream-dev openssl)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (skiff runs containers; its tests create namespaces, mounts and cgroups)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# crun refuses cgroup v1 "hybrid" mode while the v2 mount holds a controller (here: hugetlb);
# mounting the v1 hugetlb hierarchy moves it over.
if [ -d /sys/fs/cgroup/unified ] && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null \
   && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
  mkdir -p /sys/fs/cgroup/hugetlb 2>/dev/null || mount -o remount,rw /sys/fs/cgroup
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || echo "setup.sh: could not mount hugetlb v1 (crun may refuse hybrid mode)" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ "${CI:-}" = true ]; then
  npm ci --no-audit --no-fund
fi
npm run build
