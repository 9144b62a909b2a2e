#!/usr/bin/env bash
# create_new_runtime benchmark: per round, the agent's create workflow (request → runtime running
# with all its networks, registered and persisted) against the bare Engine API call sequence with
# the same request bodies. Figures go to docs/runtime.md.
# Needs root (veth links in 10.204.250.0/24 and 10.204.251.0/24) and the Docker engine; builds the
# test images and the benchmark (debug profile, like the tests: the time is spent in the engine).
#   sudo scripts/bench-create.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-create.sh: must run as root (veth links)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench-create.sh: the Docker engine is not running" >&2; exit 1; }
bash scripts/test-images.sh >/dev/null
cargo build --quiet --example bench_create
exec "${CARGO_TARGET_DIR:-target}/debug/examples/bench_create" "$@"
