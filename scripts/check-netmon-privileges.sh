#!/usr/bin/env bash
# Checks netmon's deployed privileges for dedicated NICs on the real engine (a script, not a test;
# the result is recorded in docs/netmon.md "Privileges"): netmon runs in a container exactly as
# install/install.sh runs it (host network, host PID namespace, --cap-drop ALL plus the given
# capabilities, no-new-privileges, read-only, Docker's default seccomp and AppArmor profiles), a
# runtime-like container runs beside it, and a veth end made on the host is moved into the
# runtime, checked and given back through the command channel. Everything it makes is named
# nicchk<pid>* and removed at the end.
#
# Usage (root):  scripts/check-netmon-privileges.sh [CAP...]   (default: NET_ADMIN SYS_ADMIN SYS_PTRACE;
# the installer adds MKNOD and SYS_CHROOT for serial ports, which this script does not exercise)
# Runs a static build of the current sources (glibc static-pie, built here) in the busybox test
# image (scripts/test-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "check-netmon-privileges.sh: must run as root" >&2; exit 1; }
caps=("$@")
[ ${#caps[@]} -gt 0 ] || caps=(NET_ADMIN SYS_ADMIN SYS_PTRACE)
image=${IMAGE:-orchestrator-test/busybox:latest}

triple=$(rustc -vV | sed -n 's/^host: //p')
tdir=${CARGO_TARGET_DIR:-target}/static-check
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q -p autonomy-netmon --target "$triple" --target-dir "$tdir"
bin=$(realpath "$tdir/$triple/debug/autonomy-netmon")

tag=nicchk$$
dir=$(mktemp -d)
cleanup() {
  docker rm -f "$tag-netmon" "$tag-rt" >/dev/null 2>&1 || true
  ip link del "${tag}a" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" up
ip link set "${tag}b" up
args=(--name "$tag-netmon" --network host --pid host --cap-drop ALL)
for c in "${caps[@]}"; do args+=(--cap-add "$c"); done
docker run -d "${args[@]}" --read-only --security-opt no-new-privileges \
  -v "$dir:/var/orchestrator" -v "$bin:/autonomy-netmon:ro" --entrypoint /autonomy-netmon \
  "$image" --socket /var/orchestrator/netmon.sock >/dev/null
# A runtime's capabilities with a dedicated NIC (upstream-head §9.1.7).
docker run -d --name "$tag-rt" --cap-add NET_RAW --cap-add NET_ADMIN --cap-add SYS_NICE \
  --cap-add MKNOD "$image" sleep 120 >/dev/null
for _ in $(seq 50); do [ -S "$dir/netmon.sock" ] && break; sleep 0.1; done
pid=$(docker inspect -f '{{.State.Pid}}' "$tag-rt")

echo "netmon capabilities: ${caps[*]}"
python3 - "$dir/netmon.sock" "$pid" "${tag}a" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()  # network_discovery
ok = True
for cmd in ("move_nic_to_container", "check_nic_in_container", "return_nic_to_host"):
    f.write(json.dumps({"command": cmd, "host_interface": sys.argv[3],
                        "container_pid": int(sys.argv[2])}) + "\n")
    f.flush()
    while True:
        line = json.loads(f.readline())
        if "type" not in line:
            break
    print(f"  {cmd}: {json.dumps(line)}")
    ok = ok and line.get("success") and line.get("present", True)
sys.exit(0 if ok else 1)
PY
