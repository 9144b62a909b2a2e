#!/usr/bin/env bash
# Builds the local images the tests use. No registry is reachable here, so images are made from
# files on this machine. Idempotent: an image that already exists is kept.
#   orchestrator-test/busybox:latest   a rootfs with Debian's static busybox (sleep, sh, httpd, ...)
set -euo pipefail
image=orchestrator-test/busybox:latest
if ! docker image inspect "$image" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/etc"
  cp /bin/busybox "$tmp/bin/busybox"
  for applet in sh sleep true cat ls httpd ip ifconfig wget nc; do ln -s busybox "$tmp/bin/$applet"; done
  echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/etc/passwd"
  tar -C "$tmp" -c . | docker import --change 'CMD ["/bin/sleep","3600"]' - "$image" >/dev/null
fi
echo "test image: $image"
