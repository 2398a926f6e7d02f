"""The errors the lock protocol raises (their root: :class:`ltxpool.errors.LtxpoolError`)."""

from __future__ import annotations

import os
from typing import Any

from ltxpool.errors import LtxpoolError

__all__ = ["LockTimeout", "LockFileError"]


class LockTimeout(LtxpoolError, TimeoutError):
    """The lock was still busy when the timeout ran out (a normal outcome for the janitor)."""

    def __init__(self, path: str | os.PathLike[str], step: str, waited: float) -> None:
        LtxpoolError.__init__(self, path, step, None, f"busy, gave up after {waited * 1000:.1f} ms")
        self.args = (os.fspath(path), step, waited)
        self.waited = waited

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.step, self.waited)


class LockFileError(LtxpoolError):
    """A lock file could not be opened or locked, or is not a regular file we own."""
