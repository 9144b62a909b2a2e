#!/usr/bin/env bash
# A second Docker engine for the engine matrix: Docker 26.1 (Engine API 1.45, the API family Pi users
# get from Docker's install script: networks given at create with per-endpoint MACs), taken from
# Debian trixie's packages without installing anything system-wide.
#
#   scripts/engine-26.sh start    download + extract once (under target/engine-26/), start dockerd,
#                                 print the DOCKER_HOST to use
#   scripts/engine-26.sh stop     stop it (its containers and networks go with its data root)
#   scripts/engine-26.sh host     print the DOCKER_HOST of a running instance
#
# How: `apt-get download` of trixie's docker.io and containerd through a private source list and
# apt state (the machine's apt configuration is not touched), `dpkg-deb -x`, then dockerd from that
# tree with its own data root, exec root and socket. It uses bookworm's runc (trixie's needs glibc
# 2.38) and starts its own containerd from the extracted tree. It runs next to the machine's engine,
# so it must not touch that engine's things: its default bridge is a bridge of its own (`orch-d26`,
# 10.203.254.1/24, made here) rather than docker0 — with `--bridge=none` dockerd deletes docker0
# from under the other engine — and it writes no iptables rules (the other engine owns the DOCKER
# chains).
set -euo pipefail

# Pins: what the engine matrix was measured with. Debian keeps only the newest revision of a
# package in a suite: when a pin is gone, trixie's current docker.io 26.x is used instead.
DOCKER_DEB=26.1.5+dfsg1-9+deb13u1+b1
CONTAINERD_DEB=1.7.24~ds1-6+deb13u1

root=$(cd "$(dirname "$0")/.." && pwd)
base=${ORCH_ENGINE26_DIR:-$root/target/engine-26}
run=/run/orchestrator-engine-26
sock=$run/docker.sock
bridge=orch-d26
bridge_addr=10.203.254.1/24

die() {
  printf 'engine-26.sh: %s\n' "$*" >&2
  exit 1
}

fetch() {
  local tree=$base/tree
  [ -x "$tree/usr/sbin/dockerd" ] && [ -x "$tree/usr/bin/containerd" ] && return 0
  command -v runc >/dev/null 2>&1 || die "runc is missing (Debian's runc package; docker.io depends on it)"
  mkdir -p "$base/apt/lists/partial" "$base/apt/cache/archives/partial" "$base/debs"
  echo "deb http://deb.debian.org/debian trixie main" >"$base/apt/sources.list"
  local apt=(-o "Dir::Etc::SourceList=$base/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$base/apt/lists" -o "Dir::Cache=$base/apt/cache"
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" -qq update >/dev/null || die "cannot read Debian trixie's package index"
  # The pinned versions first; Debian keeps only a suite's newest revision, so when a pin is gone
  # take trixie's current docker.io 26.x rather than failing the test run, and say so.
  if ! (cd "$base/debs" && apt-get "${apt[@]}" -qq download \
    "docker.io=$DOCKER_DEB" "containerd=$CONTAINERD_DEB" >/dev/null 2>&1); then
    rm -f "$base"/debs/*.deb
    (cd "$base/debs" && apt-get "${apt[@]}" -qq download docker.io containerd >/dev/null) ||
      die "cannot download docker.io and containerd from trixie"
    local got
    got=$(cd "$base/debs" && ls)
    case "$got" in
      *docker.io_26.*) echo "engine-26.sh: pins gone, using trixie's current packages: $got" >&2 ;;
      *) die "trixie's docker.io is no longer 26.x ($got): update the pins and this check" ;;
    esac
  fi
  rm -rf "$tree.tmp"
  mkdir -p "$tree.tmp"
  for d in "$base"/debs/*.deb; do dpkg-deb -x "$d" "$tree.tmp"; done
  mv "$tree.tmp" "$tree"
}

host() {
  echo "unix://$sock"
}

running() {
  DOCKER_HOST=$(host) docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

start() {
  fetch
  if running; then
    host
    return 0
  fi
  mkdir -p "$run" "$base/data"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip -4 route show table all | grep -q "10\.203\.254\." &&
      die "10.203.254.0/24 is in use on this machine; the engine's bridge needs it"
    ip link add "$bridge" type bridge
    ip addr add "$bridge_addr" dev "$bridge"
    ip link set "$bridge" up
  fi
  local tree=$base/tree
  PATH="$tree/usr/bin:$tree/usr/sbin:$PATH" setsid dockerd \
    --data-root "$base/data" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
    -H "unix://$sock" --bridge="$bridge" --iptables=false --ip-masq=false \
    >"$base/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    running && break
    sleep 1
  done
  running || {
    tail -n 20 "$base/dockerd.log" >&2
    die "Docker 26.1 did not start (log: $base/dockerd.log)"
  }
  host
}

stop() {
  [ -f "$run/docker.pid" ] || return 0
  local pid
  pid=$(cat "$run/docker.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -9 "$pid" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  host) host ;;
  *) die "usage: scripts/engine-26.sh start|stop|host" ;;
esac
