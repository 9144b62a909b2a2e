#!/usr/bin/env python3
"""The runtime's side of the debugger bridge, for the agent's integration tests.

Speaks what the OpenPLC runtime's web server does (webserver/debug_websocket.py): `POST /api/login`
answering a JWT-like `access_token`, and a python-socketio server whose `/api/debug` namespace
checks `auth["token"]` in its connect handler, emits `connected` from inside that handler (so the
event goes out BEFORE the namespace CONNECT reply, as with the runtime), and answers each
`debug_command` `{"command": "<HEX>"}` with one `debug_response` `{"success": true, "data": "<HEX>"}`
from a fake PLC, or `{"success": false, "error": "Unauthorized"}` once the token expired. Engine.IO
as the runtime configures it: ping interval 25 s, ping timeout 60 s, no upgrades, TLS.

The fake PLC: 16 variables of one byte each, variable i holds i unless forced; md5 "abc"; tick
starts at 66 and counts the GET_LIST replies.

Usage:
  debug_runtime.py --cert server.crt --key server.key [--host 0.0.0.0] [--port 8443]

Prints one JSON object per line on stdout:
  {"ready": <port>}
  {"login": <username>, "ok": <bool>}
  {"connect": <sid>, "token_ok": <bool>}          a namespace connect (refused when not ok)
  {"disconnect": <sid>}
  {"debug_command": "<HEX>", "sid": <sid>}        every command received
Reads one JSON command per line on stdin:
  {"delay": <seconds>}        the next reply is sent this late
  {"drop": true}              server-side disconnect of every debug client
  {"expire": true}            every token issued so far expires (commands answer Unauthorized)
  {"login_mode": "ok" | "no_token"}
  {"refuse": <bool>}          refuse every namespace connect (as with a bad token)
"""

import argparse
import asyncio
import json
import secrets
import ssl
import sys

import socketio
from aiohttp import web

NSP = "/api/debug"
USERS = {"dev": "dev"}
VARIABLES = 16


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def hexs(data):
    return " ".join(f"{b:02X}" for b in data)


class Plc:
    def __init__(self):
        self.forced = {}
        self.tick = 66

    def answer(self, cmd):
        fc = cmd[0]
        if fc == 0x45:
            return bytes([0x45, 0x7E]) + b"abc\x00"
        if fc == 0x41:
            return bytes([0x41]) + VARIABLES.to_bytes(2, "big")
        if fc == 0x44:
            n = int.from_bytes(cmd[1:3], "big")
            idx = [int.from_bytes(cmd[3 + 2 * i:5 + 2 * i], "big") for i in range(n)]
            if any(i >= VARIABLES for i in idx):
                return bytes([0x44, 0x81])
            data = b"".join(self.forced.get(i, bytes([i])) for i in idx)
            tick = self.tick
            self.tick += 1
            return (bytes([0x44, 0x7E]) + idx[-1].to_bytes(2, "big") + tick.to_bytes(4, "big")
                    + len(data).to_bytes(2, "big") + data)
        if fc == 0x42:
            index = int.from_bytes(cmd[1:3], "big")
            force = cmd[3]
            length = int.from_bytes(cmd[4:6], "big")
            value = bytes(cmd[6:6 + length])
            if index >= VARIABLES:
                return bytes([0x42, 0x81])
            if force:
                self.forced[index] = value
            else:
                self.forced.pop(index, None)
            return bytes([0x42, 0x7E])
        return bytes([fc, 0x5A])


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8443)
    args = ap.parse_args()

    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        ping_interval=25,
        ping_timeout=60,
        allow_upgrades=False,
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)
    state = {"tokens": set(), "sid_token": {}, "delay": 0.0, "login_mode": "ok", "refuse": False}
    plc = Plc()

    async def login(request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        user = body.get("username")
        ok = USERS.get(user) == body.get("password")
        out({"login": user, "ok": ok})
        if not ok:
            return web.json_response({"error": "Invalid credentials"}, status=401)
        if state["login_mode"] == "no_token":
            return web.json_response({"message": "ok"})
        token = secrets.token_hex(16)
        state["tokens"].add(token)
        return web.json_response({"access_token": token})

    app.router.add_post("/api/login", login)

    @sio.on("connect", namespace=NSP)
    async def connect(sid, environ, auth=None):
        token = (auth or {}).get("token")
        ok = token in state["tokens"] and not state["refuse"]
        out({"connect": sid, "token_ok": ok})
        if not ok:
            return False
        state["sid_token"][sid] = token
        # Inside the handler, as the runtime does: goes out before the CONNECT reply.
        await sio.emit("connected", {"status": "ok"}, to=sid, namespace=NSP)

    @sio.on("disconnect", namespace=NSP)
    async def disconnect(sid, *reason):
        state["sid_token"].pop(sid, None)
        out({"disconnect": sid})

    @sio.on("debug_command", namespace=NSP)
    async def debug_command(sid, data):
        command = (data or {}).get("command", "")
        out({"debug_command": command, "sid": sid})
        if state["sid_token"].get(sid) not in state["tokens"]:
            await sio.emit("debug_response", {"success": False, "error": "Unauthorized"},
                           to=sid, namespace=NSP)
            return
        delay, state["delay"] = state["delay"], 0.0
        reply = plc.answer(bytes.fromhex(command))
        if delay:
            await asyncio.sleep(delay)
        await sio.emit("debug_response", {"success": True, "data": hexs(reply)},
                       to=sid, namespace=NSP)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ctx)
    await site.start()
    out({"ready": site._server.sockets[0].getsockname()[1]})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if "delay" in cmd:
            state["delay"] = float(cmd["delay"])
        elif "drop" in cmd:
            for sid in list(state["sid_token"]):
                await sio.disconnect(sid, namespace=NSP)
        elif "expire" in cmd:
            state["tokens"].clear()
        elif "refuse" in cmd:
            state["refuse"] = bool(cmd["refuse"])
        elif "login_mode" in cmd:
            state["login_mode"] = cmd["login_mode"]
        out({"done": cmd})


if __name__ == "__main__":
    asyncio.run(main())
