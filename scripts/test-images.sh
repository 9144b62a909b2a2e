#!/usr/bin/env bash
# Builds the local images the tests use. No registry is reachable here, so images are made from
# files on this machine. Idempotent: an image that already exists is kept.
#   orchestrator-test/busybox:latest   a rootfs with Debian's static busybox (sleep, sh, httpd, ...)
#   127.0.0.1:9/orchestrator-test/busybox:latest   the same image under a loopback "registry" name:
#       code under test that pulls before using a local image (the agent does) then fails at once on
#       127.0.0.1:9 instead of sending any traffic off the machine, and falls back to the local image.
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
docker tag "$image" "127.0.0.1:9/$image"
echo "test images: $image, 127.0.0.1:9/$image"
