#!/usr/bin/env bash
# delete_orchestrator benchmark: the time to remove N runtimes (default 20) whose process ignores
# SIGTERM, so each stop takes the whole grace period (default 10 s). Figures go to
# docs/benchmarks.md. Needs root (a veth link in 10.204.252.0/24) and the Docker engine.
#   sudo scripts/bench-selfdestruct.sh [--runtimes N] [--grace SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-selfdestruct.sh: must run as root (veth link)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench-selfdestruct.sh: the Docker engine is not running" >&2; exit 1; }
bash scripts/test-images.sh >/dev/null
cargo build --quiet --example bench_selfdestruct
exec "${CARGO_TARGET_DIR:-target}/debug/examples/bench_selfdestruct" "$@"
