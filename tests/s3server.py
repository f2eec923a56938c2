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
