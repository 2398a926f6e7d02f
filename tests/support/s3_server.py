"""A real S3 API server for the tests: moto's, as a process on 127.0.0.1.

Never a mocked client: ltxpool's boto3 client talks HTTP to ``moto.server`` exactly as
it would to a bucket, and so does the real ``litestream`` binary. One server per
session (``s3_server``), a new bucket per test (``s3``). The test credentials are put
in the environment of the test process (and handed to every child through it), so
boto3's default chain finds them as it would on a host; the shared config and
credentials files are pointed at nothing, so no developer's own profile leaks in.

::

    def test_x(s3):                 # an S3 with a fresh bucket
        s3.target("db")             # RemoteTarget s3://<bucket>/db at the server
        s3.url("db")                # the Litestream-style URL of it
        s3.client().list_objects_v2(Bucket=s3.bucket)
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ltxpool.remote import RemoteTarget, make_client

__all__ = ["S3", "S3Server", "free_port", "s3", "s3_server", "TEST_ENV", "wait_until_up"]

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "ltxpool-test",
    "AWS_SECRET_ACCESS_KEY": "ltxpool-test-secret",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_DROPPED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])


@dataclass
class S3:
    """The server and one bucket of its own."""

    server: S3Server
    bucket: str
    endpoint: str

    def target(self, prefix: str = "db", endpoint: str | None = None) -> RemoteTarget:
        return RemoteTarget(self.bucket, prefix, endpoint or self.endpoint, "us-east-1", True)

    def url(self, prefix: str = "db", endpoint: str | None = None) -> str:
        return (f"s3://{self.bucket}/{prefix}?endpoint={endpoint or self.endpoint}"
                "&region=us-east-1&forcePathStyle=true")

    def client(self) -> Any:
        return make_client(self.target())

    def keys(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key -> size."""
        client, found, token = self.client(), {}, None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                args["ContinuationToken"] = token
            page = client.list_objects_v2(**args)
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def body(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())


def wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ltxpool-moto-{port}.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint, process)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3:
    for name in _DROPPED:
        monkeypatch.delenv(name, raising=False)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"ltxpool-{secrets.token_hex(6)}"
    make_client(RemoteTarget(bucket, "x", s3_server.endpoint, "us-east-1", True)).create_bucket(Bucket=bucket)
    return S3(s3_server, bucket, s3_server.endpoint)
