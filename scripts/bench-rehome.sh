#!/usr/bin/env bash
# Re-home benchmark: N runtimes (default 10) on one veth parent, the parent moved between two
# subnets a few times; prints, per round, how long netmon took to report the change and how long
# the agent took from that event until every runtime was attached to the new subnet's network.
# Needs root and the Docker engine; builds the test images, netmon and the benchmark (debug profile,
# like the tests: the time is spent in the engine, not in the agent).
#   sudo scripts/bench-rehome.sh [--runtimes N] [--rounds R] [--octets A,B] [--parent NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-rehome.sh: must run as root (veth links)" >&2; exit 1; }
bash scripts/test-images.sh >/dev/null
cargo build --quiet -p autonomy-netmon
cargo build --quiet --example bench_rehome
exec "${CARGO_TARGET_DIR:-target}/debug/examples/bench_rehome" "$@"
