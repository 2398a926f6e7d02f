"""The boto3 S3 client for a :class:`~ltxpool.remote.target.RemoteTarget`.

Credentials come from boto3's default chain only (environment, shared credentials
file, instance role); nothing here reads, logs or returns one. Settings, and why:

* ``retries={"mode": "standard"}``: botocore's own retry of 5xx, throttling
  (``SlowDown``), timeouts and reset connections, with backoff; ``retry.call``
  retries whole steps on top.
* connect and read timeouts, so a store that stops answering fails a step (to be
  retried) instead of hanging a worker forever.
* ``on_attempt``, called before every HTTP attempt, botocore's retries included:
  the pool's shipper says it is alive there, so a step that keeps retrying against a
  store that does not answer is not taken for a hung process and killed before it
  can report the failure. The silence between two calls is one attempt and one
  backoff, at most :data:`LONGEST_SILENCE`: an attempt that makes no progress for the
  connect and read timeouts fails, and botocore's jittered backoff before its n-th
  retry is up to 2**(n-1) s (8 s before the 4th), plus up to 5 s more where a store
  sends ``x-amz-retry-after``. botocore 1.44 backs off from non-throttling errors far
  less (0.05 of that), older ones do not: the bound is the older ones'. A step's own
  backoff (``ltxpool.remote.retry``) is shorter.
* path-style addressing where the target asks (MinIO, moto, most self-hosted stores).
* request checksums only where an operation requires them: the CRC trailers boto3
  sends by default since 1.36 are refused by several S3-compatible stores. ltxpool
  sends ``Content-MD5`` on every upload itself instead, which every store checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from ltxpool.remote.target import RemoteTarget

__all__ = ["CONNECT_TIMEOUT", "LONGEST_SILENCE", "READ_TIMEOUT", "make_client"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: botocore's ``max_attempts`` counts retries: one call is up to 5 HTTP attempts.
_BOTOCORE_RETRIES = 4
_LONGEST_BACKOFF = min(2.0 ** (_BOTOCORE_RETRIES - 1), 20.0) + 5.0
#: The longest a client with the default settings goes between two ``on_attempt`` calls
#: while its store answers nothing useful: one stalled attempt and botocore's longest backoff
#: (a large part sent slowly is one attempt too, however long it takes).
LONGEST_SILENCE = CONNECT_TIMEOUT + READ_TIMEOUT + _LONGEST_BACKOFF


def make_client(
    target: RemoteTarget, *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
    max_attempts: int = _BOTOCORE_RETRIES, on_attempt: Callable[[], None] | None = None,
) -> Any:
    """A new S3 client (one per process: boto3 clients are not shared across a fork)."""
    config = Config(
        region_name=target.region,
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": "path" if target.force_path_style else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="ltxpool",
    )
    # A session of its own: boto3's default session is shared module state.
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=target.endpoint, config=config)
    if on_attempt is not None:
        # A before-send handler that returns something replaces the request's answer with it.
        def before_send(**_: Any) -> None:
            on_attempt()

        client.meta.events.register("before-send.s3", before_send)
    return client
