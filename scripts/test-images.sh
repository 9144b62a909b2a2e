#!/usr/bin/env bash
# Builds the local images the tests use. No registry is reachable here, so images are made from
# files on this machine. Idempotent: an image that exists is kept (the busybox one is rebuilt when
# its applet list changes).
#   orchestrator-test/busybox:latest   a rootfs with Debian's static busybox (sleep, sh, httpd, ...)
#   127.0.0.1:9/orchestrator-test/busybox:latest   the same image under a loopback "registry" name:
#       code under test that pulls before using a local image (the agent does) then fails at once on
#       127.0.0.1:9 instead of sending any traffic off the machine, and falls back to the local image.
set -euo pipefail
image=orchestrator-test/busybox:latest
# Rebuilt when the applet list changes (the label records it).
applets="sh sleep true cat ls httpd ip ifconfig wget nc rm mknod chmod"
if [ "$(docker image inspect --format '{{ index .Config.Labels "orchestrator-test.applets" }}' "$image" 2>/dev/null)" != "$applets" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/etc"
  cp /bin/busybox "$tmp/bin/busybox"
  for applet in $applets; do ln -s busybox "$tmp/bin/$applet"; done
  echo 'root:x:0:0:root:/:/bin/sh' >"$tmp/etc/passwd"
  tar -C "$tmp" -c . | docker import --change 'CMD ["/bin/sleep","3600"]' \
    --change "LABEL orchestrator-test.applets=\"$applets\"" - "$image" >/dev/null
fi
docker tag "$image" "127.0.0.1:9/$image"
echo "test images: $image, 127.0.0.1:9/$image"

# orchestrator-test/https-server:latest (+ its 127.0.0.1:9/ twin): a stand-in for the OpenPLC runtime's
# REST API for the run_command tests: test_support's https-test-server serving HTTPS on 8443 (fresh
# self-signed certificate) and plain HTTP on 8080. Built as a normal (dynamically linked) debug binary,
# imported with exactly the shared libraries `ldd` lists. The image carries the stripped binary's sha256 as a
# label, so it is rebuilt only when the binary changed.
server_image=orchestrator-test/https-server:latest
cargo build --quiet -p test_support --bin https-test-server
server_bin="${CARGO_TARGET_DIR:-target}/debug/https-test-server"
stmp=$(mktemp -d)
trap 'rm -rf "$stmp" ${tmp:+"$tmp"}' EXIT
mkdir -p "$stmp/bin"
cp "$server_bin" "$stmp/bin/https-test-server"
# Debug info is not needed in the image, and without it the checksum does not depend on the
# target dir the binary was built in.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$stmp/bin/https-test-server"; fi
server_sum=$(sha256sum "$stmp/bin/https-test-server" | cut -d' ' -f1)
if [ "$(docker image inspect --format '{{ index .Config.Labels "orchestrator-test.sha256" }}' "$server_image" 2>/dev/null)" != "$server_sum" ]; then
  for lib in $(ldd "$server_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$stmp$(dirname "$lib")"
    cp -L "$lib" "$stmp$lib"
  done
  tar -C "$stmp" -c . | docker import \
    --change 'ENTRYPOINT ["/bin/https-test-server"]' \
    --change "LABEL orchestrator-test=1 orchestrator-test.sha256=$server_sum" \
    - "$server_image" >/dev/null
fi
docker tag "$server_image" "127.0.0.1:9/$server_image"
echo "test images: $server_image, 127.0.0.1:9/$server_image"
