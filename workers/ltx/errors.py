"""The errors the LTX codec raises: every malformed input is a :class:`CorruptLTXError`."""

from __future__ import annotations

import os
from typing import Any

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError

__all__ = ["CorruptLTXError", "LtxReadError", "LtxOpenError", "VarintError", "PayloadError"]


class CorruptLTXError(LtxpoolError):
    """An LTX file is malformed; ``offset`` is the byte where the problem was found."""

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        LtxpoolError.__init__(self, path, "decode", None, reason)
        self.args = (os.fspath(path), offset, reason)
        self.offset = offset

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.offset, self.reason)

    def __str__(self) -> str:
        # Escaped as LtxpoolError.__str__ is: the path is a name a tenant chose.
        return f"{escape(self.path)}: corrupt at byte {self.offset}: {escape(self.reason)}"


class LtxReadError(LtxpoolError):
    """Reading an LTX file failed at the system-call level (not a format problem)."""


class LtxOpenError(LtxpoolError):
    """An LTX file could not be opened safely (missing, a symlink, not a regular file)."""


class VarintError(Exception):
    """A malformed varint; ``offset`` is absolute. Callers turn it into CorruptLTXError."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason


class PayloadError(Exception):
    """A page payload is malformed; ``offset`` is relative to the payload's first byte."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason
