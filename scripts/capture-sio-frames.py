#!/usr/bin/env python3
"""Captures the WebSocket frames real Socket.IO servers send to an agent, as fuzz seeds.

Run by scripts/capture-corpus.sh (which builds devcloud and provides the venv with python-socketio
and aiohttp); run once, the output is checked in. It starts, on 127.0.0.1 only:
  - tests/python/sio_server.py (python-socketio, the original cloud's library) and
  - devcloud (socketioxide),
both over mutual TLS with a throwaway PKI made by `devcloud init`, connects to each as the agent
would (Engine.IO v4 over a WebSocket, namespace /), makes the server emit every cloud topic with
realistic arguments (both vNIC generations, both run_command forms, with and without acks, one
binary event), answers acks, and records every text frame the server sent.

Writes:
  <out>/sio_packet/<server>-<n>   one raw frame per file (Engine.IO packet text)
  <out>/contract/<server>-<n>     EVENT frames as "<topic>\\0<JSON argument array>"

Usage: capture-sio-frames.py --devcloud PATH --out fuzz/seeds
"""

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One argument list per emit; documentation addresses only (these are strings, no traffic).
VNIC_3D2C700 = {
    "name": "vnic0",
    "parent_interface": "eth0",
    "parent_subnet": "192.0.2.0/24",
    "parent_gateway": "192.0.2.1",
    "network_mode": "manual",
    "ip_address": "192.0.2.50",
    "subnet": "192.0.2.0/24",
    "gateway": "192.0.2.1",
    "dns": ["192.0.2.53"],
    "mac_address": "02:42:c0:00:02:32",
}
VNIC_PRODUCTION = {
    "name": "vnic1",
    "parent_interface": "wlan0",
    "network_mode": "static",
    "ip": "198.51.100.7/24",
    "subnet": "255.255.255.0",
    "gateway": "198.51.100.1",
    "dns": ["198.51.100.53", "9.9.9.9"],
    "mac": "02:42:c6:33:64:07",
}
VNIC_DHCP = {"name": "vnic2", "parent_interface": "eth1", "network_mode": "dhcp"}
WHEN = "2025-11-20T20:30:45.123456Z"

EMITS = [
    ("create_new_runtime", [{"correlation_id": 101, "action": "create_new_runtime", "requested_at": WHEN,
                             "container_name": "plc-line-1", "runtime_version": "latest",
                             "vnic_configs": [VNIC_3D2C700, VNIC_PRODUCTION, VNIC_DHCP]}]),
    ("delete_device", [{"correlation_id": 102, "device_id": "plc-line-1", "requested_at": WHEN}]),
    ("start_device", [{"correlation_id": 103, "device_id": "plc-line-1"}]),
    ("stop_device", [{"correlation_id": 104, "device_id": "plc-line-1", "action": "stop_device"}]),
    ("restart_device", [{"correlation_id": 105, "device_id": "plc-line-1"}]),
    ("get_device_status", [{"correlation_id": 106, "device_id": "plc-line-1"}]),
    ("run_command", [{"correlation_id": 107, "device_id": "plc-line-1", "method": "GET",
                      "api": "api/status?verbose=1", "port": 8443,
                      "headers": {"Accept": "application/json", "X-Request-Id": "r-17"}}]),
    ("run_command", [{"correlation_id": 108, "device_id": "plc-line-1", "method": "POST",
                      "api": "/api/program", "headers": {"Content-Type": "application/json"},
                      "data": {"program": "main.st", "start": True, "cycle_ms": 20.5}}]),
    ("run_command", ["plc-line-1", {"method": "post", "api": "upload-program",
                                    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                                    "data": {"file": "prog.st", "size": 1024}}]),
    ("get_consumption_device", [{"correlation_id": 109, "device_id": "plc-line-1",
                                 "cpuPeriod": "1h", "memoryPeriod": "1700000000,1700003600"}]),
    ("get_consumption_orchestrator", [{"correlation_id": 110, "cpuPeriod": "30m", "memoryPeriod": "7d"}]),
    ("get_host_interfaces", [{"correlation_id": 111, "include_virtual": True, "detailed": False}]),
    ("delete_orchestrator", [{"correlation_id": 112, "requested_at": "2025-11-20T20:30:45+00:00"}]),
    # Refusals the agent must answer: wrong types, unknown topic, unicode.
    ("create_new_runtime", [{"correlation_id": "113", "container_name": "plc é 😀", "vnic_configs": {}}]),
    ("no_such_topic", [{"correlation_id": 114}]),
]


class Recorder:
    def __init__(self, name):
        self.name = name
        self.frames = []

    def add(self, text):
        self.frames.append(text)


async def agent_session(url, ssl_ctx, recorder, connected, done):
    """Plays the agent: open, namespace connect, pongs, acks; records what the server sends."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, ssl=ssl_ctx, server_hostname="localhost", max_msg_size=0) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                text = msg.data
                recorder.add(text)
                if text.startswith("0"):
                    await ws.send_str("40")
                elif text.startswith("40"):
                    connected.set()
                elif text.startswith("2"):
                    await ws.send_str("3" + text[1:])
                elif text.startswith("42"):
                    # An event; answer when it carries an ack id: 42<id>[...]
                    rest = text[2:]
                    digits = len(rest) - len(rest.lstrip("0123456789"))
                    if digits:
                        await ws.send_str("43" + rest[:digits] + json.dumps(
                            [{"status": "ok", "correlation_id": None}]))
                if done.is_set() and ws.closed:
                    break


async def capture(name, url, ssl_ctx, emit, finish, settle=2.5):
    recorder = Recorder(name)
    connected, done = asyncio.Event(), asyncio.Event()
    session = asyncio.ensure_future(agent_session(url, ssl_ctx, recorder, connected, done))
    await asyncio.wait_for(connected.wait(), 20)
    for topic, args in EMITS:
        await emit(topic, args, ack=True)
    await emit("heartbeat_request", [{"correlation_id": 115}], ack=False)
    await asyncio.sleep(settle)  # a couple of pings at the 1 s interval
    done.set()
    await finish()
    try:
        await asyncio.wait_for(session, 10)
    except (asyncio.TimeoutError, aiohttp.ClientError):
        session.cancel()
    return recorder


def write_seeds(out, recorder):
    n = 0
    for text in dict.fromkeys(recorder.frames):  # unique, in order
        n += 1
        with open(os.path.join(out, "sio_packet", f"{recorder.name}-{n:02d}"), "w") as f:
            f.write(text)
        if text.startswith("42"):
            rest = text[2:].lstrip("0123456789")
            try:
                items = json.loads(rest)
            except ValueError:
                continue
            if isinstance(items, list) and items and isinstance(items[0], str):
                with open(os.path.join(out, "contract", f"{recorder.name}-{n:02d}"), "wb") as f:
                    f.write(items[0].encode() + b"\0" + json.dumps(items[1:], ensure_ascii=False).encode())
    return n


def client_ssl(pki):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "agent", "client.crt"), os.path.join(pki, "agent", "client.key"))
    return ctx


async def python_server(pki, ctx):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(ROOT, "tests", "python", "sio_server.py"),
        "--cert", os.path.join(pki, "server.crt"), "--key", os.path.join(pki, "server.key"),
        "--ca", os.path.join(pki, "ca.crt"), "--ping-interval", "1", "--ping-timeout", "5",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready = json.loads(await proc.stdout.readline())
    port = ready["ready"]
    pending = {}

    async def pump():
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            msg = json.loads(line)
            if "id" in msg and msg["id"] in pending:
                pending.pop(msg["id"]).set_result(msg)

    pump_task = asyncio.ensure_future(pump())
    counter = iter(range(1, 1 << 30))

    async def send(cmd):
        cid = next(counter)
        cmd["id"] = cid
        pending[cid] = asyncio.get_running_loop().create_future()
        proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await proc.stdin.drain()
        return await asyncio.wait_for(pending[cid], 15)

    async def emit(topic, args, ack):
        await send({"emit": topic, "args": args, "ack": ack, "timeout": 5})

    async def finish():
        await send({"emit_binary": "create_new_runtime"})
        await asyncio.sleep(0.5)
        proc.stdin.write(b'{"disconnect": true}\n')
        await proc.stdin.drain()
        await asyncio.sleep(0.5)
        proc.stdin.write(b'{"stop": true}\n')
        await proc.stdin.drain()

    try:
        return await capture("python-socketio", f"wss://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
                             ctx, emit, finish)
    finally:
        pump_task.cancel()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def devcloud_server(devcloud, pki, ctx):
    proc = await asyncio.create_subprocess_exec(
        devcloud, "serve", "--dir", pki, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--ping-interval", "1s", "--ping-timeout", "5s",
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sio_port = http_port = None
    while sio_port is None or http_port is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        if not line:
            raise RuntimeError("devcloud exited before listening")
        if "Socket.IO over mTLS on" in line:
            sio_port = int(line.rsplit(":", 1)[1])
        elif "http://127.0.0.1:" in line:
            http_port = int(line.split("http://127.0.0.1:", 1)[1].split("/")[0].split()[0])
    drain = asyncio.ensure_future(proc.stderr.read())
    http = aiohttp.ClientSession()

    async def emit(topic, args, ack):
        q = "" if ack else "?ack=false"
        async with http.post(f"http://127.0.0.1:{http_port}/emit/{topic}{q}", json=args) as r:
            await r.read()

    async def finish():
        proc.stdin.close()  # devcloud shuts down at the end of its stdin

    try:
        return await capture("devcloud", f"wss://127.0.0.1:{sio_port}/socket.io/?EIO=4&transport=websocket",
                             ctx, emit, finish)
    finally:
        await http.close()
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        drain.cancel()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devcloud", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for sub in ("sio_packet", "contract"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capture-sio-") as pki:
        subprocess.run([args.devcloud, "init", "--dir", pki], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        ctx = client_ssl(pki)
        for rec in (await python_server(pki, ctx), await devcloud_server(args.devcloud, pki, ctx)):
            print(f"{rec.name}: {write_seeds(args.out, rec)} distinct frames")


if __name__ == "__main__":
    asyncio.run(main())
