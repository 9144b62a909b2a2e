#!/usr/bin/env bash
# Captures the fuzz seed corpora from real peers, into fuzz/seeds/<target>/ (checked in). Run once,
# as root, when a peer's wire format changes; review the diff before committing (the seeds are
# small by design: a few KB per target).
#   sudo scripts/capture-corpus.sh
# Peers: python-socketio (tests/python/sio_server.py) and devcloud (socketioxide) for Socket.IO
# frames and the messages they carry; the kernel (in a network namespace this creates) for
# rtnetlink datagrams, and the real autonomy-netmon for its JSON lines; the Docker engine on
# /var/run/docker.sock for pull and event streams (pulls from a loopback registry only); Python's
# own json/datetime formatters for the state files and dates. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/fuzz/seeds"

[ "$(id -u)" -eq 0 ] || { echo "capture-corpus.sh: must run as root (netns, docker socket)" >&2; exit 1; }

venv="$root/target/test-venv"
if ! "$venv/bin/python" -c 'import socketio, aiohttp' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check python-socketio aiohttp
fi
cargo build -q -p devcloud -p autonomy-netmon

for t in sio_packet contract netlink_datagram netmon_line docker_stream state_files timefmt; do
  rm -rf "${out:?}/$t"
done
"$venv/bin/python" scripts/capture-sio-frames.py --devcloud target/debug/devcloud --out "$out"
python3 scripts/capture-netlink.py --out "$out" --netmon target/debug/autonomy-netmon
python3 scripts/capture-docker-streams.py --out "$out"
python3 scripts/capture-python-formats.py --out "$out"
du -sh "$out"/*
