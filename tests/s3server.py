"""A real S3 endpoint on this machine: moto's server (the S3 protocol over HTTP on 127.0.0.1),
as Ray's own storage tests use. Every process that gets `env` (a sweep, a Ray node, a Ray job)
talks to it through `AWS_ENDPOINT_URL`, which pyarrow's S3 filesystem, boto3 and the AWS CLI
all honour, so raygenre's code runs unchanged against it.

One server per test session (`s3` fixture in conftest.py); each test makes its own bucket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """A running moto server; `env` is what a process needs to use it as its S3."""

    endpoint: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def bucket(self, prefix: str = "rg") -> str:
        """A new empty bucket's name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under `prefix`, sorted."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start(workdir: Path, port: int | None = None) -> S3Server:
    """Start moto's S3 server on 127.0.0.1 and wait until it answers."""
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = workdir / "moto.log"
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
            break
        except OSError as e:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto's S3 server did not start on {endpoint} ({e}); "
                                   f"its log: {log.read_text()[-2000:]}") from e
            time.sleep(0.2)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # No instance-metadata look-ups: there is no EC2 here, and each costs a time-out.
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return S3Server(endpoint=endpoint, proc=proc, log=log, env=env)


def with_env(server: S3Server, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the server as its S3."""
    return {**(os.environ if base is None else base), **server.env}


@dataclass
class Fault:
    """Answer `status`/`code` instead of forwarding, to requests whose method is in `methods`
    and whose path starts with `prefix` (/bucket/key...): `times` times for each distinct
    request (method and path with its query: each retry of one PUT is the same request),
    `None` for always."""

    methods: tuple[str, ...]
    status: int
    code: str
    prefix: str = "/"
    times: int | None = 1


WRITES = ("PUT", "POST", "DELETE")
MESSAGES = {"SlowDown": "Please reduce your request rate.", "AccessDenied": "Access Denied",
            "InternalError": "We encountered an internal error. Please try again."}


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of the S3 server that answers some requests with an
    S3 error (a throttling 503 SlowDown, a 403 AccessDenied) instead of forwarding them: a
    bucket that refuses writes, or one that throttles. `served` lists (method, path, status)
    of every error it answered; `env` is `server.env` pointed at the proxy."""

    def __init__(self, server: S3Server, faults: list[Fault]) -> None:
        import http.server
        import threading

        self.upstream = server.endpoint.removeprefix("http://")
        self.faults = faults
        self.served: list[tuple[str, str, int]] = []
        self.forwarded = 0
        self._seen: dict[tuple[int, str, str], int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault(self.command, self.path)
                if fault is not None:
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}'
                           f'</Code><Message>{MESSAGES.get(fault.code, fault.code)}</Message>'
                           f'<RequestId>fault</RequestId></Error>').encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD"
                                                           else len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                import http.client

                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length",
                                                "connection")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                with proxy._lock:
                    proxy.forwarded += 1
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection",
                                         "server", "date"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.env = {**server.env, "AWS_ENDPOINT_URL": self.endpoint}
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self.faults):
                if method not in f.methods or not path.startswith(f.prefix):
                    continue
                key = (i, method, path)
                n = self._seen.get(key, 0)
                if f.times is not None and n >= f.times:
                    continue
                self._seen[key] = n + 1
                self.served.append((method, path, f.status))
                return f
        return None

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
