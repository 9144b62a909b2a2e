"""A real, independent Socket.IO client (python-socketio + aiohttp) driven by devcloud's tests.

Connects over mutual TLS, reports what happens as JSON lines on stdout and obeys JSON-line commands
on stdin:
  {"op":"emit","event":E,"args":[...]}   emit without ack
  {"op":"call","event":E,"args":[...]}   emit with ack; prints {"type":"ack","args":[...]}
  {"op":"disconnect"}                     disconnect and exit
Every server event is printed as {"type":"event","name":E,"args":[...]} and acknowledged:
events named "multi_ack" get their own arguments back as separate ack values, every other event
gets one value {"event":E,"args":[...]}.
"""

import argparse
import asyncio
import json
import ssl
import sys

import aiohttp
import socketio


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--transport", default="websocket")
    p.add_argument("--reconnect", action="store_true")
    a = p.parse_args()

    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
    sio = socketio.AsyncClient(
        http_session=session,
        reconnection=a.reconnect,
        reconnection_delay=0.2,
        reconnection_delay_max=0.5,
        websocket_extra_options={"ssl": ctx},
        handle_sigint=False,
    )
    done = asyncio.Event()

    @sio.event
    async def connect():
        out({"type": "connected", "sid": sio.get_sid()})

    @sio.event
    async def disconnect(reason=None):
        out({"type": "disconnected", "reason": str(reason)})
        if not a.reconnect:
            done.set()

    @sio.on("*")
    async def catch_all(event, *args):
        out({"type": "event", "name": event, "args": list(args)})
        if event == "multi_ack":
            return tuple(args)
        return {"event": event, "args": list(args)}

    try:
        await sio.connect(a.url, transports=[a.transport], wait_timeout=10)
    except Exception as e:  # noqa: BLE001 - the test reads the message
        out({"type": "connect_error", "error": repr(e)})
        await session.close()
        return 2

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands():
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "emit":
                await sio.emit(cmd["event"], tuple(cmd.get("args", [])))
                out({"type": "emitted", "event": cmd["event"]})
            elif op == "call":
                res = await sio.call(cmd["event"], tuple(cmd.get("args", [])), timeout=10)
                if res is None:
                    res = []
                elif not isinstance(res, tuple):
                    res = [res]
                out({"type": "ack", "args": list(res)})
            elif op == "disconnect":
                await sio.disconnect()
                break
        done.set()

    task = asyncio.create_task(commands())
    await done.wait()
    task.cancel()
    if sio.connected:
        await sio.disconnect()
    await session.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
