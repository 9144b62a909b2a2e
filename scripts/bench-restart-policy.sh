#!/usr/bin/env bash
# Which restart policy brings runtimes back faster after a reboot, and which keeps them running
# while the agent is down: the engine's `unless-stopped`, or `no` with the agent starting them (the
# original's later choice). Figures for docs/benchmarks.md; nothing here is a test.
#
#   scripts/bench-restart-policy.sh [RUNTIMES_PER_POLICY]   (default 5)
#
# Runs on the private Docker 26 engine of scripts/engine-26.sh (never the machine's engine), with
# busybox containers on `--network none`. A "reboot" is that daemon stopped (its containers stop
# with it, as at a shutdown) and started again: `unless-stopped` containers are started by the
# engine itself; `no` containers by an agent that is already up and starts each one the moment the
# API answers (the best an agent can do; a real agent is a container the engine starts too, then
# needs its own start-up and netmon's discovery first). Times are from the daemon's launch to each
# container's `State.StartedAt`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-5}
prefix=orch-bench-rp
image=orch-bench-rp-busybox

command -v busybox >/dev/null || { echo "busybox-static is needed" >&2; exit 1; }
DOCKER_HOST=$(bash scripts/engine-26.sh start)
export DOCKER_HOST

cleanup() {
  docker ps -aq --filter "label=$prefix" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker rmi -f "$image" >/dev/null 2>&1 || true
  [ "${1:-}" = first ] || bash scripts/engine-26.sh stop
}
trap cleanup EXIT
cleanup first

tmp=$(mktemp -d)
mkdir -p "$tmp/bin"
cp "$(command -v busybox)" "$tmp/bin/busybox"
ln -s busybox "$tmp/bin/sleep"
tar -C "$tmp" -c . | docker import --change 'CMD ["/bin/sleep","1000000"]' - "$image" >/dev/null
rm -rf "$tmp"

for i in $(seq 1 "$n"); do
  for policy in unless-stopped no; do
    docker run -d --name "$prefix-$policy-$i" --label "$prefix=1" --restart "$policy" \
      --network none "$image" >/dev/null
  done
done

# Seconds (3 decimals) from $1 (epoch seconds with fraction) to a container's StartedAt.
since() {
  local started
  started=$(docker inspect --format '{{.State.StartedAt}}' "$2")
  python3 -c "import sys,datetime as d; s=sys.argv[2][:26].rstrip('Z')+'+00:00'; \
print(f'{d.datetime.fromisoformat(s).timestamp()-float(sys.argv[1]):.3f}')" "$1" "$started"
}

echo "== reboot: the daemon stopped and started again, $n runtimes per policy"
bash scripts/engine-26.sh stop
t0=$(date +%s.%N)
bash scripts/engine-26.sh start >/dev/null &
starter=$!
# The agent's part: poll the API every 50 ms, then start the `no` runtimes at once, in order.
until docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; do sleep 0.05; done
t_api=$(date +%s.%N)
for i in $(seq 1 "$n"); do docker start "$prefix-no-$i" >/dev/null; done
t_agent=$(date +%s.%N)
wait "$starter"
python3 -c 'import sys; t0, api, agent, n = map(float, sys.argv[1:]); \
print(f"API answered after {api - t0:.3f} s; the agent had started its {n:.0f} runtimes after {agent - t0:.3f} s")' \
  "$t0" "$t_api" "$t_agent" "$n"
for policy in unless-stopped no; do
  times=()
  for i in $(seq 1 "$n"); do times+=("$(since "$t0" "$prefix-$policy-$i")"); done
  echo "$policy: running after ${times[*]} s"
done

echo "== a runtime's process killed (kill -9 from the host) while the agent is down"
for policy in unless-stopped no; do
  c=$prefix-$policy-1
  pid=$(docker inspect --format '{{.State.Pid}}' "$c")
  tk=$(date +%s.%N)
  kill -9 "$pid"
  back=""
  for _ in $(seq 1 100); do
    read -r running now < <(docker inspect --format '{{.State.Running}} {{.State.Pid}}' "$c")
    if [ "$running" = true ] && [ "$now" != 0 ] && [ "$now" != "$pid" ]; then
      back=$(since "$tk" "$c")
      break
    fi
    sleep 0.1
  done
  if [ -n "$back" ]; then
    echo "$policy: running again after $back s"
  else
    echo "$policy: still down after 10 s"
  fi
done
