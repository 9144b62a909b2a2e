#!/usr/bin/env bash
# Benchmark of the cloud link's reconnect pacing (a script, not a test; figures go to
# docs/benchmarks.md):
#   1. schedule: the agent is started against a port nobody listens on, for --window seconds, and
#      every "retrying in X s" line of its log is turned into a row: attempt, seconds since the
#      first failure, the delay chosen;
#   2. outage: devcloud runs, the agent connects, devcloud is killed and started again on the same
#      port after --outage seconds; the time from devcloud listening again to the agent's Socket.IO
#      connect is reported (--rounds times).
# Everything runs on loopback (127.0.0.1), with a dev PKI made by `devcloud init` in a temp dir.
#
# Usage:  scripts/bench-reconnect.sh [--window SECONDS] [--outage SECONDS] [--rounds N] [--no-build]
#                                    [--agent-bin PATH]
#   --window N        how long to watch the schedule against a closed port (default 240)
#   --outage N        length of each cloud outage (default 5)
#   --rounds N        number of outages (default 5)
#   --no-build        use the binaries already in $CARGO_TARGET_DIR/release (default target/release)
#   --agent-bin PATH  measure this agent binary (e.g. the static build)
set -euo pipefail
cd "$(dirname "$0")/.."

window=240
outage=5
rounds=5
build=1
agent_override=""
while [ $# -gt 0 ]; do
  case "$1" in
    --window) window="$2"; shift 2 ;;
    --outage) outage="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    --agent-bin) agent_override="$2"; shift 2 ;;
    *) echo "usage: $0 [--window SECONDS] [--outage SECONDS] [--rounds N] [--no-build] [--agent-bin PATH]" >&2; exit 2 ;;
  esac
done

tdir=${CARGO_TARGET_DIR:-target}
if [ -n "$build" ]; then
  echo "==> building the release binaries" >&2
  cargo build -q --release -p orchestrator-agent -p devcloud
fi
agent_bin=${agent_override:-$tdir/release/orchestrator-agent}
cloud_bin="$tdir/release/devcloud"
for b in "$agent_bin" "$cloud_bin"; do
  [ -x "$b" ] || { echo "bench-reconnect.sh: $b is missing (build first or drop --no-build)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/bench-reconnect.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "bench-reconnect.sh: $*" >&2; exit 1; }
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }

"$cloud_bin" init --dir "$work/pki" 2>"$work/init.err" || die "devcloud init failed: $(cat "$work/init.err")"
start_agent() { # $1 port, $2 log file
  mkdir -p "$work/state-$1"
  "$agent_bin" --server "https://localhost:$1" --ca-file "$work/pki/ca.crt" \
    --mtls-dir "$work/pki/agent" --state-dir "$work/state-$1" --log-level debug \
    --docker-host unix:///nonexistent/docker.sock 2>"$2" >/dev/null &
  pids+=($!)
}

# A free port: bind, read, release.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- 1. the schedule against a closed port ---------------------------------------------------------
port=$(free_port)
echo "==> schedule: agent against closed port $port for $window s" >&2
start_agent "$port" "$work/schedule.log"
sleep "$window"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
echo
echo "reconnect schedule, $(date -u +%Y-%m-%dT%H:%MZ), tree $commit, agent $agent_bin"
echo
echo "| attempt | failed at (s since the first failure) | delay chosen (s) |"
echo "|---|---|---|"
# Log lines: "<RFC 3339 UTC time>  LEVEL target: cannot connect to ...; retrying in X.Y s ..."
grep -a 'retrying in' "$work/schedule.log" | awk '
  {
    split($1, dt, "T"); split(dt[2], hms, ":"); sub(/Z$/, "", hms[3]);
    t = hms[1] * 3600 + hms[2] * 60 + hms[3];
    if (NR == 1) t0 = t;
    if (t < t0) t += 86400;
    match($0, /retrying in [0-9.]+ s/); d = substr($0, RSTART + 12, RLENGTH - 14);
    printf "| %d | %.1f | %s |\n", NR, t - t0, d;
  }'

# --- 2. outages of a running cloud -------------------------------------------------------------------
port=$(free_port)
serve() { # starts devcloud on $port, stdout lines stamped with their arrival time (microseconds)
  mkfifo "$work/cloud-$1.fifo"
  (while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME/[.,]/}" "$line"; done \
    <"$work/cloud-$1.fifo" >"$work/cloud-$1.out") &
  pids+=($!)
  "$cloud_bin" serve --dir "$work/pki" --listen "127.0.0.1:$port" --no-http \
    </dev/null >"$work/cloud-$1.fifo" 2>"$work/cloud-$1.err" &
  cloud=$!
  pids+=("$cloud")
  for _ in $(seq 1 400); do
    grep -q 'Socket.IO over mTLS on' "$work/cloud-$1.err" 2>/dev/null && break
    sleep 0.005
  done
  grep -q 'Socket.IO over mTLS on' "$work/cloud-$1.err" || die "devcloud did not start"
  listening=$(now_us)
}
wait_connected() { # $1 round; prints the arrival time of the first "connected" line
  for _ in $(seq 1 6000); do
    t=$(awk '/"connected":true/ {print $1; exit}' "$work/cloud-$1.out" 2>/dev/null)
    [ -n "$t" ] && { echo "$t"; return; }
    sleep 0.01
  done
  die "the agent did not connect in round $1"
}
echo "==> outages: $rounds x $outage s on port $port" >&2
serve 0
start_agent "$port" "$work/outage.log"
wait_connected 0 >/dev/null
echo
echo "| outage | agent connected after devcloud listened again |"
echo "|---|---|"
for r in $(seq 1 "$rounds"); do
  sleep 40 # longer than the backoff's STABLE_AFTER (30 s): each outage starts a fresh fast phase
  kill "$cloud"; wait "$cloud" 2>/dev/null || true
  sleep "$outage"
  serve "$r"
  t=$(wait_connected "$r")
  printf '| %d (%s s) | %d ms |\n' "$r" "$outage" $(( (t - listening) / 1000 ))
done
