"""HTTPS test runtime for run_command uploads: parses what the agent sends with a real multipart
parser (aiohttp's, streaming) and echoes what it got, as sizes and SHA-256 digests, never contents.

Usage: upload_peer.py --cert CERT --key KEY [--host 127.0.0.1] [--port 8443]
Prints {"ready": <port>} on stdout once it listens. Any path answers 200 with:
  {"method", "path", "args": {name: [values]}, "headers": {lower-case name: value},
   "content_type", "content_length", "form": {name: value},
   "files": [{"field", "filename", "content_type", "size", "sha256"}]}
A non-multipart body is reported as {"body_size", "body_sha256"} instead of form/files.
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    answer = {
        "method": request.method,
        "path": request.path,
        "args": {k: request.query.getall(k) for k in request.query.keys()},
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "content_type": request.headers.get("Content-Type"),
        "content_length": request.headers.get("Content-Length"),
        "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
    }
    if request.content_type == "multipart/form-data":
        form, files = {}, []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if part.filename is None:
                form[part.name] = await part.text()
                continue
            digest, size = hashlib.sha256(), 0
            while True:
                chunk = await part.read_chunk(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
            files.append(
                {
                    "field": part.name,
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "size": size,
                    "sha256": digest.hexdigest(),
                }
            )
        answer["form"] = form
        answer["files"] = files
    else:
        body = await request.read()
        answer["body_size"] = len(body)
        answer["body_sha256"] = hashlib.sha256(body).hexdigest()
    return web.json_response(answer)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    app = web.Application(client_max_size=128 << 20)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 (port 0 support)
    print(json.dumps({"ready": port}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
