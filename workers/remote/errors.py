"""Every error raised while keeping or reading an off-host copy in a bucket, in one place.

Root: :class:`RemoteError` (an :class:`ltxpool.errors.LtxpoolError`: path, step, errno,
reason; pickles). ``path`` is the object's ``s3://bucket/key`` (or the config file, for
a config error) and never holds a credential.
"""

from __future__ import annotations

import os
from typing import Any

from ltxpool.errors import LtxpoolError

__all__ = [
    "RemoteError",
    "RemoteConfigError",
    "RemoteRequestError",
    "RemoteConflictError",
    "LeaseHeld",
    "LeaseLost",
    "ConditionalWritesUnsupported",
    "ShortResponse",
]


class RemoteError(LtxpoolError):
    """Root of the remote layer's errors."""


class RemoteConfigError(RemoteError):
    """A remote target's configuration or URL is invalid; ``step`` names the key (the pool
    raises it as its own ConfigError)."""


class RemoteRequestError(RemoteError):
    """A request to the bucket failed for good: refused (403, 404, ...) or still failing
    after every retry (5xx, throttling, timeouts, reset connections)."""


class RemoteConflictError(RemoteError):
    """The bucket already holds a different object under a name ltxpool would write."""


class LeaseHeld(RemoteError):
    """Another pool holds the prefix's lease: two writers must never ship into one prefix."""

    def __init__(self, path: str | os.PathLike[str], step: str, errno: int | None, reason: str,
                 holder: str = "") -> None:
        super().__init__(path, step, errno, reason)
        #: The holder's owner id, ``host:pid:token``, as its lease object says.
        self.holder = holder

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.step, self.errno, self.reason, self.holder)


class LeaseLost(RemoteError):
    """Our lease was taken over or removed (it expired while we did not renew it)."""


class ConditionalWritesUnsupported(RemoteError):
    """The store ignores ``If-None-Match: *``, so a lease there would protect nothing."""


class ShortResponse(Exception):
    """Internal to ``retry``: an answer that broke off (a body shorter than it said); the
    step is tried again, and if it keeps failing it becomes a RemoteRequestError."""
