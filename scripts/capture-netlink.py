#!/usr/bin/env python3
"""Captures raw rtnetlink datagrams, as seeds for the netlink_datagram fuzz target.

Run by scripts/capture-corpus.sh as root, once; the output is checked in. Everything happens in a
network namespace this script creates (fuzzcap-<pid>, deleted at the end, also on failure), so the
host's links are never touched: a veth pair inside it gets addresses in 10.203.180.0/24 and
10.203.181.0/24 (this project's test range), a default route and a multipath route. Recorded, as
the kernel sent them:
  - the dump answers of RTM_GETLINK, RTM_GETADDR (IPv4) and RTM_GETROUTE (IPv4), datagram by
    datagram, NLMSG_DONE included;
  - the multicast events (RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE) of bringing links
    up and down, adding and removing addresses and routes, and deleting a link;
  - with --netmon, the JSON lines the real autonomy-netmon (run inside the namespace on a socket
    in a temporary directory) sent about all that: seeds for the netmon_line target.

Usage: capture-netlink.py --out fuzz/seeds [--netmon target/debug/autonomy-netmon]
"""

import argparse
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

NS = f"fuzzcap-{os.getpid()}"
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40


def ip(*args):
    subprocess.run(["ip", "-n", NS, *args], check=True)


def dump(sock, msg_type, seq, family=socket.AF_INET):
    # nlmsghdr + a family-only body (struct ifinfomsg / ifaddrmsg / rtmsg all start with it).
    body = struct.pack("B3x", family) if msg_type != RTM_GETLINK else struct.pack("BxHiII", 0, 0, 0, 0, 0)
    if msg_type == RTM_GETROUTE:
        body = struct.pack("BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0)
    sock.send(struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    datagrams = []
    while True:
        data = sock.recv(1 << 16)
        datagrams.append(data)
        if any(t == 3 for t in types(data)):  # NLMSG_DONE
            return datagrams


def types(data):
    off = 0
    while off + 16 <= len(data):
        length, t = struct.unpack_from("=IH", data, off)
        yield t
        if length < 16:
            return
        off += (length + 3) & ~3


def drain(sock, timeout=0.3):
    out = []
    while select.select([sock], [], [], timeout)[0]:
        out.append(sock.recv(1 << 16))
    return out


def in_netns():
    """Re-executed inside the namespace (`ip netns exec`): does the work, writes the seeds."""
    out = os.path.join(sys.argv[sys.argv.index("--out") + 1], "netlink_datagram")
    os.makedirs(out, exist_ok=True)
    seeds = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        for name, t, seq in (("dump-links", RTM_GETLINK, 1), ("dump-addresses", RTM_GETADDR, 2),
                             ("dump-routes", RTM_GETROUTE, 3)):
            for i, d in enumerate(dump(s, t, seq)):
                seeds.append((f"{name}-{i}", d))
    netmon = sys.argv[sys.argv.index("--netmon") + 1] if "--netmon" in sys.argv else None
    lines, stop_netmon = [], None
    if netmon:
        stop_netmon = start_netmon(netmon, lines)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as ev:
        ev.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE))
        steps = [
            ("link-down", ["link", "set", "fz1", "down"]),
            ("link-up", ["link", "set", "fz1", "up"]),
            ("addr-add", ["addr", "add", "10.203.181.9/24", "dev", "fz1"]),
            ("route-add", ["route", "add", "10.203.182.0/24", "via", "10.203.181.1", "dev", "fz1"]),
            ("route-multipath", ["route", "add", "10.203.183.0/24", "nexthop", "via", "10.203.180.1",
                                 "dev", "fz0", "nexthop", "via", "10.203.181.1", "dev", "fz1"]),
            ("route-del", ["route", "del", "10.203.182.0/24"]),
            ("addr-del", ["addr", "del", "10.203.181.9/24", "dev", "fz1"]),
            ("link-del", ["link", "del", "fz0"]),
        ]
        for name, args in steps:
            subprocess.run(["ip", *args], check=True)
            for i, d in enumerate(drain(ev)):
                seeds.append((f"event-{name}-{i}", d))
            time.sleep(0.4 if netmon else 0)  # past netmon's debounce: one report per step
    for name, data in seeds:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"netlink: {len(seeds)} datagrams, {sum(len(d) for _, d in seeds)} bytes")
    if netmon:
        time.sleep(1)
        stop_netmon()
        lines_dir = os.path.join(os.path.dirname(out), "netmon_line")
        os.makedirs(lines_dir, exist_ok=True)
        for i, line in enumerate(dict.fromkeys(lines)):
            with open(os.path.join(lines_dir, f"netmon-{i:02d}"), "wb") as f:
                f.write(b"\0" + line)  # mode byte 0: raw line for the agent's decoder
        print(f"netmon: {len(lines)} lines")


def start_netmon(path, lines):
    """Runs netmon in this namespace and collects its lines; returns the function that stops it."""
    tmp = tempfile.mkdtemp(prefix="fuzzcap-netmon-")
    sock_path = os.path.join(tmp, "netmon.sock")
    proc = subprocess.Popen([path, "--socket", sock_path, "--debounce", "200ms", "--log-level", "warn"])
    for _ in range(100):
        if os.path.exists(sock_path):
            break
        time.sleep(0.05)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(sock_path)

    def read():
        buf = b""
        while True:
            data = client.recv(65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def stop():
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        client.close()
        subprocess.run(["rm", "-rf", tmp], check=False)

    return stop


def main():
    if "--inside" in sys.argv:
        return in_netns()
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--netmon", help="autonomy-netmon binary: also capture its JSON lines")
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        ip("link", "set", "lo", "up")
        ip("link", "add", "fz0", "type", "veth", "peer", "name", "fz1")
        ip("link", "set", "fz0", "address", "02:00:0a:cb:b4:02")
        ip("link", "set", "fz0", "up")
        ip("link", "set", "fz1", "up")
        ip("addr", "add", "10.203.180.2/24", "dev", "fz0")
        ip("route", "add", "default", "via", "10.203.180.1", "dev", "fz0")
        inside = [sys.executable, os.path.abspath(__file__), "--inside", "--out", os.path.abspath(args.out)]
        if args.netmon:
            inside += ["--netmon", os.path.abspath(args.netmon)]
        subprocess.run(["ip", "netns", "exec", NS, *inside], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    main()
