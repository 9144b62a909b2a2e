#!/usr/bin/env python3
"""Captures the Docker Engine's streaming answers byte for byte, as fuzz seeds.

Run by scripts/capture-corpus.sh as root, once; the output is checked in. It talks to the real
engine on /var/run/docker.sock and records the raw HTTP/1.1 responses (status line, headers and
the chunked body exactly as the engine framed it) of:
  - two pulls (POST /images/create) from a loopback registry on 127.0.0.1 that this script serves
    (one single-layer image, as docker_api/tests/engine/registry.rs does; nothing leaves the
    machine): one that succeeds and one whose blobs are missing (the error arrives inside the 200);
  - the event stream (GET /events with since/until, so the engine ends it) around the life of a
    container and a network this script creates, labelled and removed at the end, and the image
    events of the pulls.
Everything it creates is named fuzzcap-<pid>, labelled orchestrator-fuzz-capture=<pid>, and removed
even on failure. It never touches another object.

Writes <out>/docker_stream/<name>: mode byte 0, two piece-size bytes, then the raw response; and
<out>/docker_stream/<name>-lines: mode byte 1, then the body's lines split into 0xFF-separated
chunks at arbitrary places (as the engine's chunks do not line up with lines).

Usage: capture-docker-streams.py --out fuzz/seeds
"""

import argparse
import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import time
import urllib.parse

SOCK = "/var/run/docker.sock"
PID = os.getpid()
LABEL = "orchestrator-fuzz-capture"
NAME = f"fuzzcap-{PID}"
IMAGE = "orchestrator-test/busybox:latest"


def engine(method, path, body=None):
    """One request on a fresh connection; returns the raw response bytes (read to EOF)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(SOCK)
        s.sendall(head + data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def status(raw):
    return int(raw.split(b" ", 2)[1])


def body_of(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2:]
    return b"".join(out)


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = b"hello from the loopback registry\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), 1700000000
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Registry:
    """A loopback registry serving one image; `missing` answers 404 for every blob."""

    def __init__(self):
        layer = layer_tar()
        config = json.dumps({"architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
                             "os": "linux", "config": {"Cmd": ["/hello.txt"]},
                             "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
                             "history": [{"created_by": "fuzz capture"}]}).encode()
        self.blobs = {digest(layer): layer, digest(config): config}
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": digest(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer), "digest": digest(layer)}]}).encode()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    b = conn.recv(1)
                    if not b or (not head and b == b"\x16"):  # TLS hello: close, engine falls back
                        return
                    head += b
                method, path = head.decode("latin-1").split()[:2]
                if path == "/v2/":
                    code, ctype, body = "200 OK", "application/json", b"{}"
                elif "/manifests/" in path:
                    code, ctype, body = ("200 OK", "application/vnd.docker.distribution.manifest.v2+json",
                                         self.manifest)
                elif "/blobs/" in path and "/missing/" not in path and path.rsplit("/", 1)[1] in self.blobs:
                    code, ctype, body = "200 OK", "application/octet-stream", self.blobs[path.rsplit("/", 1)[1]]
                else:
                    code, ctype, body = ("404 Not Found", "application/json",
                                         b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
                resp = (f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                        "Docker-Distribution-API-Version: registry/2.0\r\n\r\n").encode()
                conn.sendall(resp + (b"" if method == "HEAD" else body))


def seeds(out, name, raw, sizes=(7, 3)):
    d = os.path.join(out, "docker_stream")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([0, *sizes]) + raw)
    body = body_of(raw)
    # Cut the body at a few places inside lines, as the engine's chunks fall.
    cuts = sorted({len(body) * k // 5 for k in range(1, 5)})
    pieces, last = [], 0
    for c in cuts:
        pieces.append(body[last:c])
        last = c
    pieces.append(body[last:])
    with open(os.path.join(d, name + "-lines"), "wb") as f:
        f.write(b"\x01" + b"\xff".join(pieces))
    return len(raw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    reg = Registry()
    repo_ok = f"127.0.0.1:{reg.port}/{NAME}/hello"
    repo_missing = f"127.0.0.1:{reg.port}/{NAME}/missing"
    container = network = None
    since = int(time.time()) - 1
    try:
        pull = engine("POST", "/images/create?" + urllib.parse.urlencode({"fromImage": repo_ok, "tag": "v1"}))
        print("pull:", seeds(args.out, "pull-ok", pull), "bytes")
        failed = engine("POST", "/images/create?" + urllib.parse.urlencode({"fromImage": repo_missing, "tag": "v1"}))
        print("failed pull:", seeds(args.out, "pull-missing-blobs", failed), "bytes")

        labels = {LABEL: str(PID)}
        net = engine("POST", "/networks/create", {"Name": NAME + "-net", "Driver": "bridge", "Labels": labels})
        assert status(net) == 201, net
        network = json.loads(body_of(net))["Id"]
        created = engine("POST", f"/containers/create?name={NAME}",
                         {"Image": IMAGE, "Cmd": ["sh", "-c", "exit 3"], "Labels": labels,
                          "HostConfig": {"NetworkMode": NAME + "-net"}})
        assert status(created) == 201, created
        container = json.loads(body_of(created))["Id"]
        engine("POST", f"/containers/{container}/start")
        engine("POST", f"/containers/{container}/wait")
        engine("POST", f"/networks/{network}/disconnect", {"Container": container, "Force": True})
        engine("DELETE", f"/containers/{container}?force=true")
        container = None
        engine("DELETE", f"/networks/{network}")
        network = None
        engine("DELETE", "/images/" + urllib.parse.quote(f"{repo_ok}:v1", safe=""))
        until = int(time.time()) + 1
        time.sleep(1.2)
        filters = json.dumps({"label": [f"{LABEL}={PID}"]})
        events = engine("GET", "/events?" + urllib.parse.urlencode({"since": since, "until": until, "filters": filters}))
        print("events:", seeds(args.out, "events-container-network", events, (1, 0)), "bytes")
        filters = json.dumps({"type": ["image"], "image": [f"{repo_ok}:v1"]})
        events = engine("GET", "/events?" + urllib.parse.urlencode({"since": since, "until": until, "filters": filters}))
        print("image events:", seeds(args.out, "events-image", events, (255, 255)), "bytes")
    finally:
        if container:
            engine("DELETE", f"/containers/{container}?force=true")
        if network:
            engine("DELETE", f"/networks/{network}")
        for ref in (f"{repo_ok}:v1", f"{repo_missing}:v1"):
            engine("DELETE", "/images/" + urllib.parse.quote(ref, safe=""))


if __name__ == "__main__":
    main()
