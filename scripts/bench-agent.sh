#!/usr/bin/env bash
# Benchmark of the connected agent (a script, not a test; figures go to docs/benchmarks.md):
#   1. start-up: milliseconds from starting orchestrator-agent to the first `heartbeat` event that
#      devcloud prints (mTLS handshake, Socket.IO connect, first heartbeat included);
#   2. idle: VmRSS (sampled every second) and VmHWM from /proc/<pid>/status, and CPU time
#      (utime+stime from /proc/<pid>/stat, all threads) over an idle window while connected, with
#      heartbeats every 5 s; CPU % of one core = delta ticks / CLK_TCK / window * 100;
#   3. the sizes of the release binaries.
# Everything runs on loopback: devcloud listens on 127.0.0.1 (ephemeral port), autonomy-netmon serves
# its socket in the agent's state dir (as in production, so the agent's netmon client is connected,
# not retrying), and the agent uses the Docker engine at $DOCKER_HOST or /var/run/docker.sock.
#
# Usage:  scripts/bench-agent.sh [--idle SECONDS] [--settle SECONDS] [--static] [--no-build]
#                                [--agent-bin PATH] [--prefill RUNTIMES]
#   --idle N          idle window in seconds (default 60)
#   --settle N        wait after the first heartbeat before the window (default 12: tokio's
#                     blocking-pool threads, used at start-up for file I/O, exit after 10 s idle)
#   --static          build and measure the statically linked agent and netmon (crt-static, as in
#                     the FROM-scratch images) instead of the ordinary dynamically linked ones
#   --no-build        use the binaries already in $CARGO_TARGET_DIR/release (default target/release)
#   --agent-bin PATH  measure this agent binary instead (e.g. a static or experimental build)
#   --prefill N       simulate 48 h of uptime with N runtimes: the agent starts with its host usage
#                     history and N runtime histories holding 48 h of 5 s samples (the hidden
#                     benchmark hook ORCHESTRATOR_BENCH_PREFILL_RUNTIMES; see docs/benchmarks.md)
# Run it as a user that may talk to the Docker engine (root on the benchmark machine).
set -euo pipefail
cd "$(dirname "$0")/.."

idle=60
settle=12
build=1
static=""
agent_override=""
prefill=""
while [ $# -gt 0 ]; do
  case "$1" in
    --idle) idle="$2"; shift 2 ;;
    --settle) settle="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    --static) static=1; shift ;;
    --agent-bin) agent_override="$2"; shift 2 ;;
    --prefill) prefill="$2"; shift 2 ;;
    *) echo "usage: $0 [--idle SECONDS] [--settle SECONDS] [--static] [--no-build] [--agent-bin PATH] [--prefill RUNTIMES]" >&2; exit 2 ;;
  esac
done

tdir=${CARGO_TARGET_DIR:-target}
triple=$(rustc -vV | sed -n 's/^host: //p')
# The prefill hook exists only in builds with the `bench-hooks` feature (never shipped).
features=""
if [ -n "$prefill" ]; then features="--features orchestrator-agent/bench-hooks"; fi
if [ -n "$build" ]; then
  echo "==> building the release binaries" >&2
  cargo build -q --release -p orchestrator-agent -p devcloud -p autonomy-netmon $features
  if [ -n "$static" ]; then
    echo "==> building the static release binaries ($triple)" >&2
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build -q --release -p orchestrator-agent -p autonomy-netmon $features --target "$triple"
  fi
fi
bindir="$tdir/release"
[ -n "$static" ] && bindir="$tdir/$triple/release"
agent_bin=${agent_override:-$bindir/orchestrator-agent}
netmon_bin="$bindir/autonomy-netmon"
cloud_bin="$tdir/release/devcloud"
for b in "$agent_bin" "$netmon_bin" "$cloud_bin"; do
  [ -x "$b" ] || { echo "bench-agent.sh: $b is missing (build first or drop --no-build)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/bench-agent.XXXXXX)
agent=""
netmon=""
cloud=""
stamper=""
cleanup() {
  # The agent first (a clean goodbye to the cloud), then the sidecar and the cloud.
  for p in "$agent" "$netmon" "$cloud" "$stamper"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  for p in "$agent" "$netmon" "$cloud" "$stamper"; do
    if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "bench-agent.sh: $*" >&2
  for f in cloud.err agent.err netmon.err; do
    [ -s "$work/$f" ] && { echo "--- $f" >&2; tail -20 "$work/$f" >&2; }
  done
  exit 1
}

# Microseconds since the epoch, without forking (bash 5's EPOCHREALTIME; the decimal separator
# depends on the locale, hence the two forms).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }

"$cloud_bin" init --dir "$work/pki" 2>"$work/init.err" || die "devcloud init failed: $(cat "$work/init.err")"
mkdir -p "$work/state"

# devcloud's stdout (one JSON line per event) goes through a fifo to a reader that prefixes every
# line with its arrival time in microseconds; the timestamp is taken without forking.
mkfifo "$work/cloud.fifo"
(
  while IFS= read -r line; do
    t=${EPOCHREALTIME/[.,]/}
    printf '%s %s\n' "$t" "$line"
  done <"$work/cloud.fifo" >"$work/cloud.out"
) &
stamper=$!
: >"$work/cloud.err" # exists before the polling below reads it
"$cloud_bin" serve --dir "$work/pki" --listen 127.0.0.1:0 --no-http \
  </dev/null >"$work/cloud.fifo" 2>"$work/cloud.err" &
cloud=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^devcloud: Socket.IO over mTLS on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/cloud.err")
  [ -n "$port" ] && break
  kill -0 "$cloud" 2>/dev/null || die "devcloud exited"
  sleep 0.05
done
[ -n "$port" ] || die "devcloud did not report its port"

"$netmon_bin" --socket "$work/state/netmon.sock" --log-level warn 2>"$work/netmon.err" &
netmon=$!
for _ in $(seq 1 200); do [ -S "$work/state/netmon.sock" ] && break; sleep 0.05; done
[ -S "$work/state/netmon.sock" ] || die "autonomy-netmon did not create its socket"

echo "==> starting the agent against https://localhost:$port" >&2
t_start=$(now_us)
if [ -n "$prefill" ]; then export ORCHESTRATOR_BENCH_PREFILL_RUNTIMES="$prefill"; fi
"$agent_bin" --server "https://localhost:$port" --ca-file "$work/pki/ca.crt" \
  --mtls-dir "$work/pki/agent" --state-dir "$work/state" 2>"$work/agent.err" >/dev/null &
agent=$!

t_hb=""
for _ in $(seq 1 3000); do
  t_hb=$(awk '/"event":"heartbeat"/ {print $1; exit}' "$work/cloud.out")
  [ -n "$t_hb" ] && break
  kill -0 "$agent" 2>/dev/null || die "the agent exited"
  sleep 0.01
done
[ -n "$t_hb" ] || die "no heartbeat within 30 s"
t_conn=$(awk '/"connected":true/ {print $1; exit}' "$work/cloud.out")
first_hb_ms=$(( (t_hb - t_start) / 1000 ))
connect_ms=$(( (t_conn - t_start) / 1000 ))
status_field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$agent/status"; }
rss_startup=$(status_field VmRSS)

echo "==> first heartbeat after $first_hb_ms ms; settling $settle s, then idle for $idle s" >&2
sleep "$settle"
kill -0 "$agent" 2>/dev/null || die "the agent exited"

hz=$(getconf CLK_TCK)
# utime+stime of the whole process (fields 14 and 15; the command name in field 2 has no spaces).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hb_count() { grep -c '"event":"heartbeat"' "$work/cloud.out" || true; }
# On-CPU nanoseconds summed over the threads alive now (finer than ticks; a thread that exits inside
# the window takes its share with it, so this is a lower bound when threads come and go).
oncpu_ns() { cat /proc/"$agent"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }
ctx() { cat /proc/"$agent"/task/*/status 2>/dev/null | awk '$1 ~ /ctxt_switches:/ {s += $2} END {print s + 0}'; }
a0=$(ticks "$agent"); n0=$(ticks "$netmon"); h0=$(hb_count); c0=$(ctx); s0=$(oncpu_ns)
w0=$(now_us)
rss_min=""; rss_max=0; rss_sum=0; samples=0
while :; do
  rss=$(status_field VmRSS)
  [ -n "$rss" ] || die "the agent exited during the idle window"
  [ -z "$rss_min" ] || [ "$rss" -lt "$rss_min" ] && rss_min=$rss
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  rss_sum=$((rss_sum + rss)); samples=$((samples + 1))
  [ $(( $(now_us) - w0 )) -ge $((idle * 1000000)) ] && break
  sleep 1
done
a1=$(ticks "$agent"); n1=$(ticks "$netmon"); h1=$(hb_count); c1=$(ctx); s1=$(oncpu_ns)
w1=$(now_us)
window_s=$(awk -v a="$w0" -v b="$w1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
hwm=$(status_field VmHWM)
anon=$(status_field RssAnon)
file=$(status_field RssFile)
threads=$(status_field Threads)
pss=$(awk '$1 == "Pss:" {print $2}' "/proc/$agent/smaps_rollup" 2>/dev/null || echo "?")
netmon_rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$netmon/status")
cpu_pct() { awk -v d="$1" -v hz="$hz" -v w0="$w0" -v w1="$w1" 'BEGIN {printf "%.3f", d / hz / ((w1 - w0) / 1e6) * 100}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.2f", k / 1024}'; }
size() { stat -c %s "$1"; }
size_mib() { awk -v b="$(size "$1")" 'BEGIN {printf "%.2f", b / 1048576}'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "ok" : "MISSED"}'; }

rss_avg=$((rss_sum / samples))
agent_cpu=$(cpu_pct $((a1 - a0)))
rss_max_mib=$(mib "$rss_max")
row() { printf '| %-44s | %-34s | %-22s |\n' "$1" "$2" "$3"; }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || commit="$commit + uncommitted changes"
[ -n "$build" ] && [ -z "$agent_override" ] || commit="(prebuilt agent binary; working tree now at $commit)"
{
  echo
  echo "orchestrator-agent benchmark, $(date -u +%Y-%m-%dT%H:%MZ), tree $commit"
  echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "agent: $agent_bin"
  [ -n "$prefill" ] && echo "usage histories prefilled with 48 h of samples: host + $prefill runtimes"
  echo
  row "measure" "value" "target"
  row "--------------------------------------------" "----------------------------------" "----------------------"
  row "agent start -> Socket.IO connected" "$connect_ms ms" ""
  row "agent start -> first heartbeat" "$first_hb_ms ms" "<= 500 ms: $(verdict "$first_hb_ms" 500)"
  row "RSS at first heartbeat (VmRSS)" "$(mib "$rss_startup") MiB" ""
  row "idle RSS min / avg / max ($samples samples)" "$(mib "$rss_min") / $(mib "$rss_avg") / $rss_max_mib MiB" "<= 8 MiB: $(verdict "$rss_max_mib" 8)"
  row "" "" "<= 6 MiB: $(verdict "$rss_max_mib" 6)"
  row "idle RSS at end: anon / file; PSS" "$(mib "$anon") / $(mib "$file"); $(mib "$pss") MiB" ""
  row "peak RSS (VmHWM)" "$(mib "$hwm") MiB" ""
  row "idle CPU, one core, over $window_s s" "$agent_cpu % ($((a1 - a0)) ticks of 1/$hz s)" "<= 0.1 %: $(verdict "$agent_cpu" 0.1)"
  row "idle on-CPU time (schedstat), per second" "$(awk -v d="$((s1 - s0))" -v w0="$w0" -v w1="$w1" 'BEGIN {printf "%.0f us/s = %.3f %%", d / 1000 / ((w1 - w0) / 1e6), d / 1e7 / ((w1 - w0) / 1e6)}')" ""
  row "threads; context switches in window" "$threads; $((c1 - c0))" ""
  row "heartbeats received in window" "$((h1 - h0))" ""
  row "autonomy-netmon idle RSS / CPU" "$(mib "$netmon_rss") MiB / $(cpu_pct $((n1 - n0))) %" ""
  row "orchestrator-agent binary" "$(size_mib "$agent_bin") MiB ($(size "$agent_bin") B)" ""
  row "autonomy-netmon binary" "$(size_mib "$netmon_bin") MiB ($(size "$netmon_bin") B)" ""
  echo
  ls -l "$agent_bin" "$netmon_bin" "$cloud_bin"
}
