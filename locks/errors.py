"""The errors the lock protocol raises (their root: :class:`ltxpool.errors.LtxpoolError`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError
from ltxpool.locks.holders import Holder

__all__ = ["LockTimeout", "LockFileError", "ClaimHeld"]


def _named(holders: Sequence[Holder]) -> str:
    if not holders:
        return "holder unknown (not in /proc/locks: gone, or another pid namespace)"
    return "held by " + ", ".join(str(holder) for holder in holders)


class LockTimeout(LtxpoolError, TimeoutError):
    """The lock was still busy when the timeout ran out (a normal outcome for the janitor).

    ``holders`` are the processes that held it then (from ``/proc/locks``), so the
    one line that reports the timeout says who to ask.
    """

    def __init__(self, path: str | os.PathLike[str], step: str, waited: float,
                 holders: Sequence[Holder] = ()) -> None:
        LtxpoolError.__init__(self, path, step, None, f"busy, gave up after {waited * 1000:.1f} ms")
        self.args = (os.fspath(path), step, waited)
        self.waited = waited
        self.holders = tuple(holders)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.step, self.waited, self.holders)

    def __str__(self) -> str:
        # Holder text is escaped by Holder itself; only the path and our words are added.
        return f"{escape(self.path)}: {self.step}: {escape(self.reason)}; {_named(self.holders)}"


class ClaimHeld(LtxpoolError):
    """A compaction claim is held by a process that is not a worker of this pool.

    Not "nothing to do": the level may be due, and someone else is in the way. The
    message names the holders.
    """

    def __init__(self, path: str | os.PathLike[str], step: str, holders: Sequence[Holder]) -> None:
        LtxpoolError.__init__(self, path, step, None, "claimed by a process that is not a worker of this pool")
        self.holders = tuple(holders)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.step, self.holders)

    def __str__(self) -> str:
        return f"{escape(self.path)}: {self.step}: {escape(self.reason)}; {_named(self.holders)}"


class LockFileError(LtxpoolError):
    """A lock file could not be opened or locked, or is not a regular file we own."""
