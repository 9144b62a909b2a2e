#!/usr/bin/env bash
# Runs the whole thing on one machine for development: devcloud (the development cloud, its console
# in this terminal), the agent and the autonomy-netmon sidecar, wired together on loopback.
#
#   scripts/dev-run.sh [--release] [--port N] [--no-build]
#
#   --release   build and run the release binaries (size-optimized with LTO: slower to build); the
#               default is the debug build, which reuses what scripts/test.sh already compiled
#   --port N    devcloud's Socket.IO port (default 8443); its HTTP control endpoint is N+1
#   --no-build  run the binaries already built
#
# Everything lives under ./target/dev/ (kept between runs): pki/ (the dev CA and certificates, made
# once), state/ (the agent's state dir: runtime_vnics.json, netmon.sock, logs/), agent.log,
# netmon.log, devcloud.log (devcloud's stderr) and devcloud.out (a copy of what devcloud prints).
# Type commands into this terminal once the agent is connected; Ctrl-C stops everything.
# Runtimes need the Docker engine at $DOCKER_HOST or /var/run/docker.sock (root, or the docker
# group); without it the agent still connects and answers, and runtime commands get error acks.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
port=8443
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; shift ;;
    --port) port="$2"; shift 2 ;;
    --no-build) build=""; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--release] [--port N] [--no-build]" >&2; exit 2 ;;
  esac
done
http_port=$((port + 1))

bin="${CARGO_TARGET_DIR:-target}/$profile"
if [ -n "$build" ]; then
  echo "==> building ($profile): orchestrator-agent, autonomy-netmon, devcloud" >&2
  flags=()
  [ "$profile" = release ] && flags+=(--release)
  cargo build "${flags[@]}" -p orchestrator-agent -p autonomy-netmon -p devcloud
fi
for b in orchestrator-agent autonomy-netmon devcloud; do
  [ -x "$bin/$b" ] || { echo "dev-run.sh: $bin/$b is missing (drop --no-build)" >&2; exit 1; }
done

dev="$PWD/target/dev"
mkdir -p "$dev/state"
# Idempotent: existing certificates are reused, so an agent's identity survives restarts.
init_out=$("$bin/devcloud" init --dir "$dev/pki" 2>&1) || { echo "$init_out" >&2; exit 1; }

agent=""
netmon=""
cloud=""
feeder=""
cleanup() {
  trap - EXIT INT TERM
  # The agent first, so it says goodbye to a cloud that is still there.
  for p in "$agent" "$netmon" "$cloud" "$feeder"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
  rm -f "$dev/console.fifo"
  echo "==> stopped (logs in target/dev/)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# devcloud reads its console from a fifo that this script fills from its own stdin once the agent
# is connected, so lines typed (or piped in) early are not answered with "no agent connected".
# fd 3 (read-write, so opening never blocks) keeps the fifo open until then; children close it.
rm -f "$dev/console.fifo"
mkfifo "$dev/console.fifo"
exec 3<>"$dev/console.fifo"

: >"$dev/devcloud.out"
"$bin/devcloud" serve --dir "$dev/pki" --listen "127.0.0.1:$port" --http "127.0.0.1:$http_port" \
  <"$dev/console.fifo" > >(tee -a "$dev/devcloud.out") 2>"$dev/devcloud.log" 3>&- &
cloud=$!

"$bin/autonomy-netmon" --socket "$dev/state/netmon.sock" >"$dev/netmon.log" 2>&1 </dev/null 3>&- &
netmon=$!

for _ in $(seq 1 100); do
  grep -q 'Socket.IO over mTLS on' "$dev/devcloud.log" && break
  kill -0 "$cloud" 2>/dev/null || { cat "$dev/devcloud.log" >&2; echo "devcloud did not start" >&2; exit 1; }
  sleep 0.1
done

docker_sock=${DOCKER_HOST:-unix:///var/run/docker.sock}
docker_sock=${docker_sock#unix://}
if [ ! -w "$docker_sock" ]; then
  echo "note: $docker_sock is not writable for you: runtime commands will fail (run as root or join the docker group)" >&2
fi

"$bin/orchestrator-agent" --server "https://localhost:$port" --ca-file "$dev/pki/ca.crt" \
  --mtls-dir "$dev/pki/agent" --state-dir "$dev/state" >>"$dev/agent.log" 2>&1 </dev/null 3>&- &
agent=$!

connected=""
for _ in $(seq 1 300); do
  grep -q '"connected":true' "$dev/devcloud.out" && { connected=1; break; }
  kill -0 "$agent" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$connected" ]; then
  echo "warning: the agent has not connected yet; see target/dev/agent.log" >&2
fi

cat >&2 <<HELP

==> devcloud on https://localhost:$port, agent connected: $([ -n "$connected" ] && echo yes || echo no) (log: target/dev/agent.log)
Type a command per line: the topic, then its arguments as JSON values; the ack is printed back.
  get_consumption_orchestrator {"correlation_id":1,"cpuPeriod":"1h","memoryPeriod":"1h"}
  get_host_interfaces {"correlation_id":2}
  agents | help
From another terminal (the answer is the ack's arguments as a JSON array):
  curl -s -XPOST http://127.0.0.1:$http_port/emit/get_host_interfaces -d '{"correlation_id":3}'
Ctrl-C stops devcloud, the agent and netmon.

HELP

# Hand this terminal's input to the console (the explicit <&0: a background command's stdin would
# otherwise be /dev/null). When the input ends (EOF, e.g. a piped script), the servers keep running
# until Ctrl-C or SIGTERM. `wait` (unlike a foreground child) lets the traps run at once.
cat <&0 >&3 &
feeder=$!
wait -n "$feeder" "$cloud" 2>/dev/null || true
if kill -0 "$cloud" 2>/dev/null; then
  exec 3>&-
  wait "$cloud" 2>/dev/null || true
fi
echo "==> devcloud exited (see target/dev/devcloud.log)" >&2
