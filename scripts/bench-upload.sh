#!/usr/bin/env bash
# Upload benchmark (issue 12): the release agent receives run_command uploads of 1, 8 and 32 MiB
# (decoded) from devcloud over the link and sends them as multipart/form-data to a runtime whose
# HTTPS peer (tests/python/upload_peer.py, aiohttp's multipart parser) checks every byte; prints,
# per upload, the wall time and the agent's VmHWM/VmRSS. Figures go to docs/benchmarks.md.
# Needs root (a veth link in 10.203.195.0/24, nsenter), the Docker engine and the test venv
# (ORCH_TEST_PYTHON or target/test-venv).
#   sudo scripts/bench-upload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-upload.sh: must run as root (veth links, nsenter)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench-upload.sh: the Docker engine is not running" >&2; exit 1; }
bash scripts/test-images.sh >/dev/null
cargo build --quiet --release --bin orchestrator-agent
ORCH_BENCH_AGENT="${CARGO_TARGET_DIR:-$(pwd)/target}/release/orchestrator-agent" \
  cargo test --quiet -p orchestrator-agent --test runtime_upload -- --ignored --nocapture \
  bench_upload_memory 2>&1 | grep '^BENCH'
