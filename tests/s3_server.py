"""A local S3 endpoint for tests: moto's server in a subprocess, a real HTTP endpoint that boto3
talks to as it would to AWS, MinIO or Ceph.

Usage from any test module::

    from s3_server import S3_TEST_ENV, moto_server, s3_client

    @pytest.fixture(scope="module")
    def s3_endpoint() -> Iterator[str]:
        with moto_server() as endpoint:
            yield endpoint

then ``s3_client(endpoint).create_bucket(Bucket="b")``, and ``monkeypatch.setenv`` each of
:data:`S3_TEST_ENV` before opening ``s3://b/prefix?endpoint_url=<endpoint>``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server_helpers import free_port

# moto accepts any credentials; these keep boto3 from looking for real ones.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_server(timeout: float = 20.0) -> Iterator[str]:
    """Run ``python -m moto.server`` on a free loopback port; yield its endpoint URL."""
    port = free_port()
    with tempfile.TemporaryFile() as log:  # moto logs every request: a pipe would fill up
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    output = log.read().decode("utf-8", "replace")
                    raise RuntimeError(f"moto.server exited with {proc.returncode}: {output}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"moto.server did not listen in {timeout}s") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the test endpoint, independent of the environment."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_TEST_ENV["AWS_DEFAULT_REGION"],
    )
