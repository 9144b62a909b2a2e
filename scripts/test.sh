#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine, as root:
#   sudo scripts/test.sh
# It installs what the tests need (Docker engine, busybox-static, iproute2, a Python venv with
# python-socketio), starts dockerd when no engine answers (and stops it again at the end), builds the
# local test images (no registry is reachable), then runs fmt, clippy and every test of the workspace.
# When the engine cannot be made available it fails: engine tests are never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root: the tests create network namespaces, veth links and may start dockerd"

# --- system packages ---------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"

# --- Docker engine -----------------------------------------------------------------------------
started_dockerd=""
cleanup() {
  if [ -n "$started_dockerd" ]; then
    log "stopping the dockerd this script started"
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  log "no engine answers: starting dockerd"
  dockerd >"${TMPDIR:-/tmp}/orchestrator-test-dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || break
    sleep 1
  done
  docker info >/dev/null 2>&1 || {
    tail -n 30 "${TMPDIR:-/tmp}/orchestrator-test-dockerd.log" >&2 || true
    die "the Docker engine could not be started; engine tests cannot run"
  }
fi
log "engine: $(docker version --format 'Docker {{.Server.Version}}, API {{.Server.APIVersion}}')"

# --- test images and Python peers --------------------------------------------------------------
log "building local test images"
bash scripts/test-images.sh

venv="$root/target/test-venv"
if ! "$venv/bin/python" -c 'import socketio, aiohttp' >/dev/null 2>&1; then
  log "creating the Python venv for the python-socketio test server"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check python-socketio aiohttp
fi
export ORCH_TEST_PYTHON="$venv/bin/python"

# --- checks and tests --------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace

# --- fuzzing (scripts/fuzz.sh; docs/fuzzing.md) ------------------------------------------------
# A short run of every cargo-fuzz target (seeds and regression inputs replayed first) so CI catches
# crashes; ORCH_FUZZ_SECONDS sets the per-target budget, 0 skips the stage.
fuzz_seconds=${ORCH_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" -gt 0 ]; then
  log "fuzz: every target for $fuzz_seconds s"
  bash scripts/fuzz.sh "$fuzz_seconds"
fi
