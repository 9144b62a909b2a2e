#!/usr/bin/env bash
# Benchmark of the autonomy-netmon sidecar (a script, not a test; figures go to docs/netmon.md):
#   1. idle: RSS/PSS after start-up and CPU time, wake-ups (context switches) over IDLE seconds;
#   2. load: CPU time to process 1,000 IPv4 address changes (500 adds + 500 deletes in one burst)
#      up to the moment the debounced network_change line reaches a connected client.
# Runs the static release build (what ships in the FROM-scratch image) inside a network namespace
# it creates (veth pair, 10.202.250.0/24 .. 10.202.252.0/24; nothing leaves the namespace).
#
# Usage (root):  scripts/bench-netmon.sh [--dynamic] [--idle SECONDS]
#   --dynamic      measure the ordinary dynamically linked release build instead
#   --idle N       idle window in seconds (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

idle=60
static=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dynamic) static=""; shift ;;
    --idle) idle="$2"; shift 2 ;;
    *) echo "usage: $0 [--dynamic] [--idle SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-netmon.sh: must run as root (network namespaces)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-netmon.sh: python3 is needed for the test client" >&2; exit 1; }

tdir=${CARGO_TARGET_DIR:-target}
if [ -n "$static" ]; then
  triple=$(rustc -vV | sed -n 's/^host: //p')
  echo "==> building the static release binary ($triple)" >&2
  RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p autonomy-netmon --target "$triple"
  bin="$tdir/$triple/release/autonomy-netmon"
else
  echo "==> building the release binary" >&2
  cargo build -q --release -p autonomy-netmon
  bin="$tdir/release/autonomy-netmon"
fi

ns="nmbench-$$"
work=$(mktemp -d)
pid=""
client=""
cleanup() {
  [ -n "$client" ] && kill "$client" 2>/dev/null || true
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add nm0 type veth peer name nm1
ip -n "$ns" link set nm0 up
ip -n "$ns" link set nm1 up
ip -n "$ns" addr add 10.202.250.1/24 dev nm0
ip -n "$ns" route add default via 10.202.250.254 dev nm0

sock="$work/netmon.sock"
ip netns exec "$ns" "$bin" --socket "$sock" --log-level warn 2>"$work/netmon.log" &
pid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/netmon.log" >&2; echo "netmon did not start" >&2; exit 1; }

# A client that, like the agent, reads every line; it appends one line per message to a file.
python3 -u - "$sock" >"$work/lines" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for line in s.makefile("r"):
    print(line.split('"type":"', 1)[1].split('"', 1)[0])
EOF
client=$!

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }                  # utime+stime, all threads
oncpu_ns() { awk '{print $1}' "/proc/$pid/schedstat"; }                 # main thread, ns
field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }    # kB or count
pss() { awk '$1 == "Pss:" {print $2}' "/proc/$pid/smaps_rollup"; }
hz=$(getconf CLK_TCK)

# Let start-up settle: tokio's blocking-pool thread (used once for the socket's fs calls)
# exits after 10 s of inactivity.
sleep 12
echo "==> idle for ${idle} s" >&2
t0=$(ticks); n0=$(oncpu_ns); v0=$(field voluntary_ctxt_switches); i0=$(field nonvoluntary_ctxt_switches)
sleep "$idle"
t1=$(ticks); n1=$(oncpu_ns); v1=$(field voluntary_ctxt_switches); i1=$(field nonvoluntary_ctxt_switches)
rss_idle=$(field VmRSS); anon_idle=$(field RssAnon); file_idle=$(field RssFile); pss_idle=$(pss)
threads=$(field Threads)

echo "==> 1,000 address changes" >&2
batch="$work/batch"
: >"$batch"
# 500 adds, 499 deletes (secondaries before their primary: deleting a primary deletes its
# secondaries with it) and one gateway change, so the final state differs from the initial one
# and exactly one debounced network_change is due.
for net in 251 252; do for h in $(seq 1 250); do echo "addr add 10.202.$net.$h/24 dev nm0" >>"$batch"; done; done
for h in $(seq 250 -1 1); do echo "addr del 10.202.252.$h/24 dev nm0" >>"$batch"; done
for h in $(seq 250 -1 2); do echo "addr del 10.202.251.$h/24 dev nm0" >>"$batch"; done
echo "route replace default via 10.202.250.253 dev nm0" >>"$batch"
[ "$(wc -l <"$batch")" -eq 1000 ] || { echo "batch is not 1,000 changes" >&2; exit 1; }
before_changes=$(grep -c network_change "$work/lines" || true)
c0=$(ticks); m0=$(oncpu_ns)
start=$(date +%s.%N)
ip -n "$ns" -batch "$batch"
burst_end=$(date +%s.%N)
# Wait for the debounced report (default debounce 3 s) to reach the client.
for _ in $(seq 1 200); do
  [ "$(grep -c network_change "$work/lines" || true)" -gt "$before_changes" ] && break
  sleep 0.05
done
c1=$(ticks); m1=$(oncpu_ns)
changes=$(( $(grep -c network_change "$work/lines" || true) - before_changes ))
rss_after=$(field VmRSS); hwm=$(field VmHWM)

cat <<REPORT
autonomy-netmon benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs)
binary: $bin ($(stat -c %s "$bin") bytes, $([ -n "$static" ] && echo static || echo dynamic))
idle window: ${idle} s after a 12 s settle, 1 client connected, threads: $threads
  RSS $rss_idle kB (anon $anon_idle kB, file $file_idle kB), PSS $pss_idle kB
  CPU: $((t1 - t0)) ticks (1/$hz s), main thread on-CPU $(( (n1 - n0) / 1000 )) us
  context switches: $((v1 - v0)) voluntary, $((i1 - i0)) involuntary
1,000 address changes (ip -batch took $(awk -v a="$start" -v b="$burst_end" 'BEGIN{printf "%.3f", b - a}') s):
  CPU: $((c1 - c0)) ticks (1/$hz s), main thread on-CPU $(( (m1 - m0) / 1000 )) us
  network_change lines received: $changes
  RSS after: $rss_after kB, peak (VmHWM): $hwm kB
REPORT
