#!/usr/bin/env python3
"""A python-socketio server over mutual TLS, driven by the agent's integration tests.

The reference implementation of the cloud side is python-socketio (the original agent's library),
so the agent's link is tested against it as well as against devcloud.

Usage:
  sio_server.py --cert server.crt --key server.key --ca ca.crt [--port 0]
                [--ping-interval 25] [--ping-timeout 20] [--refuse MESSAGE]

Prints one JSON object per line on stdout:
  {"ready": <port>}                         once listening
  {"connect": <sid>, "cn": <peer cert CN>, "resumed": <TLS session reused>, "t": <monotonic s>}
                                            a client joined namespace /
  {"disconnect": <sid>}                     a client left
  {"event": <name>, "sid": <sid>, "args": [...]}
  {"ack": [...], "id": <command id>}        the answer to an {"emit", "ack": true} command
  {"error": <text>, "id": <command id>}     a command failed (e.g. ack timeout)
Reads one JSON command per line on stdin:
  {"emit": <topic>, "args": [...], "ack": true|false, "timeout": 5, "id": <any>, "pad": <n>}
      ("pad" adds a "pad" field of n characters to the first argument: oversized messages)
  {"emit_binary": <topic>, "id": <any>}      emits a bytes argument (a BINARY_EVENT)
  {"sleep": <seconds>}                       blocks the event loop: no pings, no answers
  {"disconnect": true}                       server-side disconnect of every client
  {"outage": <seconds>}                      stop listening, disconnect every client, listen again
                                             after <seconds> (same port and TLS context, so
                                             session tickets stay valid); prints {"down": t} and
                                             {"up": t} (monotonic seconds)
  {"raw": <text>, "count": <n>}              sends <text> n times as raw Engine.IO messages
                                             (e.g. malformed Socket.IO packets)
  {"refuse": <message or null>}              refuse (CONNECT_ERROR) or accept namespace connects
  {"stop": true}                             exits
"""

import argparse
import asyncio
import json
import ssl
import sys
import time

import socketio
from aiohttp import web


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def session_reused(environ):
    request = environ.get("aiohttp.request")
    if request is None or request.transport is None:
        return None
    ssl_object = request.transport.get_extra_info("ssl_object")
    return None if ssl_object is None else ssl_object.session_reused


def peer_cn(environ):
    request = environ.get("aiohttp.request")
    if request is None or request.transport is None:
        return None
    cert = request.transport.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ping-interval", type=float, default=25)
    ap.add_argument("--ping-timeout", type=float, default=20)
    ap.add_argument("--refuse", default=None, help="refuse namespace connects with this message")
    args = ap.parse_args()

    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)
    sids = []
    state = {"refuse": args.refuse}

    @sio.event
    async def connect(sid, environ, auth=None):
        if state["refuse"]:
            out({"refused": sid, "cn": peer_cn(environ)})
            raise socketio.exceptions.ConnectionRefusedError(state["refuse"])
        sids.append(sid)
        out({"connect": sid, "cn": peer_cn(environ), "resumed": session_reused(environ),
             "t": time.monotonic()})

    @sio.event
    async def disconnect(sid, *reason):
        if sid in sids:
            sids.remove(sid)
        out({"disconnect": sid})

    @sio.on("*")
    async def any_event(event, sid, *data):
        out({"event": event, "sid": sid, "args": list(data)})

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(cafile=args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state["site"] = site
    out({"ready": port})

    async def outage(seconds):
        await state["site"].stop()  # refuse new connections from now on
        for sid in list(sids):
            await sio.disconnect(sid)
        out({"down": time.monotonic()})
        await asyncio.sleep(seconds)
        site = web.TCPSite(runner, args.host, port, ssl_context=ctx)
        await site.start()
        state["site"] = site
        out({"up": time.monotonic()})

    async def raw(text, count):
        # Engine.IO has its own session ids.
        to = sio.manager.eio_sid_from_sid(sids[-1], "/") if sids else None
        for _ in range(count):
            await sio.eio.send(to, text)
        out({"sent_raw": count})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def emit(cmd):
        cid = cmd.get("id")
        data = cmd.get("args", [])
        if cmd.get("pad") and data and isinstance(data[0], dict):
            data[0]["pad"] = "x" * int(cmd["pad"])
        payload = tuple(data) if len(data) != 1 else data[0]
        to = cmd.get("to") or (sids[-1] if sids else None)
        if to is None:
            out({"error": "no client connected", "id": cid})
            return
        try:
            if cmd.get("ack"):
                res = await sio.call(cmd["emit"], payload, to=to, timeout=cmd.get("timeout", 10))
                # python-socketio returns a lone value for a one-argument ack, a tuple otherwise.
                if isinstance(res, tuple):
                    res = list(res)
                elif res is None:
                    res = []
                else:
                    res = [res]
                out({"ack": res, "id": cid})
            else:
                await sio.emit(cmd["emit"], payload, to=to)
                out({"sent": cmd["emit"], "id": cid})
        except Exception as e:  # reported to the test, which decides
            out({"error": f"{type(e).__name__}: {e}", "id": cid})

    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError as e:
            out({"error": f"bad command: {e}"})
            continue
        if "emit" in cmd:
            asyncio.ensure_future(emit(cmd))
        elif "emit_binary" in cmd:
            to = sids[-1] if sids else None
            await sio.emit(cmd["emit_binary"], b"\x00\x01binary", to=to)
            out({"sent": cmd["emit_binary"], "id": cmd.get("id")})
        elif "sleep" in cmd:
            out({"sleeping": cmd["sleep"]})
            time.sleep(cmd["sleep"])  # deliberately blocks the loop
            out({"awake": True})
        elif "refuse" in cmd:
            state["refuse"] = cmd["refuse"]
            out({"refuse": cmd["refuse"]})
        elif "outage" in cmd:
            asyncio.ensure_future(outage(float(cmd["outage"])))
        elif "raw" in cmd:
            await raw(cmd["raw"], int(cmd.get("count", 1)))
        elif "disconnect" in cmd:
            for sid in list(sids):
                await sio.disconnect(sid)
        elif cmd.get("stop"):
            break
    await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
