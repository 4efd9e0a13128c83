#!/usr/bin/env bash
# Builds a small image from the host's busybox-static as a `docker save` tarball, with no registry and no
# internet: one layer holding /bin/busybox, a link per applet, /etc/passwd and /etc/group.
#   scripts/busybox-image.sh OUT.tar NAME[:TAG] [--pause]
# --pause also puts the host's (static) catatonit in as /pause with entrypoint `/pause -P`: a pod
# "pause" image for runtimes that need one (containerd's sandbox_image; the bench uses it).
set -euo pipefail
out=${1:?usage: busybox-image.sh OUT.tar NAME[:TAG] [--pause]}
name=${2:?usage: busybox-image.sh OUT.tar NAME[:TAG] [--pause]}
pause=${3:-}
case "$name" in *:*) ;; *) name="$name:latest" ;; esac

tmp=$(mktemp -d /tmp/skiff-image.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
root="$tmp/rootfs"
mkdir -p "$root"/{bin,etc,root,tmp,proc,sys,dev,var,usr/bin}
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"
install -m 0755 /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
run='"Cmd":["sh"]'
if [ "$pause" = --pause ]; then
  install -m 0755 /usr/bin/catatonit "$root/pause"
  run='"Entrypoint":["/pause","-P"]'
fi

# The same bytes every time: sorted entries, root-owned, fixed mtimes.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -C "$root" -cf "$tmp/layer.tar" .
diff_id=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
mkdir "$tmp/img" "$tmp/img/$diff_id"
mv "$tmp/layer.tar" "$tmp/img/$diff_id/layer.tar"
cat >"$tmp/config.json" <<EOF
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],$run},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"skiff scripts/busybox-image.sh"}]}
EOF
config_id=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
mv "$tmp/config.json" "$tmp/img/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$config_id" "$name" "$diff_id" >"$tmp/img/manifest.json"
tar --owner=0 --group=0 --numeric-owner -C "$tmp/img" -cf "$out" manifest.json "$config_id.json" "$diff_id"
