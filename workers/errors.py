"""ltxpool's error types, in one place, for everything under `workers/`.

All derive from :class:`locks.errors.LtxpoolError` (path, step, errno, reason) and
pickle, because they cross from a worker process to the supervisor. "Nothing to do"
is never an error: it is a return value.
"""

from __future__ import annotations

import os

from ltxpool.locks.errors import LockFileError, LockTimeout, LtxpoolError

__all__ = [
    "LtxpoolError",
    "LockTimeout",
    "LockFileError",
    "AtomicWriteError",
    "CorruptLTXError",
    "ConfigError",
]


class AtomicWriteError(LtxpoolError):
    """A step of the atomic writer failed; the temp file is gone and the final name untouched."""


class CorruptLTXError(LtxpoolError):
    """An LTX file is malformed; ``offset`` is the byte where the problem was found."""

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        LtxpoolError.__init__(self, path, "decode", None, reason)
        self.args = (os.fspath(path), offset, reason)
        self.offset = offset

    def __str__(self) -> str:
        return f"{self.path}: corrupt at byte {self.offset}: {self.reason}"


class ConfigError(LtxpoolError):
    """A configuration value or command-line argument is invalid; ``step`` names the key."""
