"""The S3 endpoint the bucket tests use is a real one: pyarrow (the filesystem Ray Tune,
Ray Train and raygenre's storage use) writes and reads through it by `AWS_ENDPOINT_URL`."""

from __future__ import annotations

import subprocess
import sys

from tests.s3server import S3Server, with_env


def test_pyarrow_reaches_the_s3_server_through_the_environment(s3: S3Server) -> None:
    bucket = s3.bucket()
    code = ("import pyarrow.fs as fs\n"
            f"f, p = fs.FileSystem.from_uri('s3://{bucket}/a/b.txt')\n"
            "with f.open_output_stream(p) as out: out.write(b'hello')\n"
            "print(f.open_input_stream(p).read().decode())\n")
    proc = subprocess.run([sys.executable, "-c", code], env=with_env(s3), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "hello"
    assert s3.keys(bucket) == ["a/b.txt"]
