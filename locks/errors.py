"""The root of every error ltxpool raises, and the two the lock protocol raises.

The root lives here, in the lowest layer, so that `locks/` needs nothing from
`workers/` while every error of the tool still shares one base class. Each error
carries the path it concerns, the step that failed and the errno (``None`` where
no system call failed). Errors cross process boundaries (a worker's failure is
logged and counted by the supervisor), so every subclass keeps its constructor
arguments in ``self.args``: that is what ``Exception.__reduce__`` pickles.
"""

from __future__ import annotations

import errno as errno_names
import os

__all__ = ["LtxpoolError", "LockTimeout", "LockFileError"]


class LtxpoolError(Exception):
    """Root of ltxpool's errors: a path, the step that failed, an errno and a reason."""

    def __init__(self, path: str | os.PathLike[str], step: str, errno: int | None, reason: str) -> None:
        super().__init__(os.fspath(path), step, errno, reason)
        self.path = os.fspath(path)
        self.step = step
        self.errno = errno
        self.reason = reason

    def __str__(self) -> str:
        code = f" [{errno_names.errorcode.get(self.errno, self.errno)}]" if self.errno else ""
        return f"{self.path}: {self.step}: {self.reason}{code}"

    @classmethod
    def from_oserror(cls, path: str | os.PathLike[str], step: str, exc: OSError) -> LtxpoolError:
        """Wrap an OSError so that the step that failed travels with it."""
        return cls(path, step, exc.errno, exc.strerror or str(exc))


class LockTimeout(LtxpoolError, TimeoutError):
    """The lock was still busy when the timeout ran out (a normal outcome for the janitor)."""

    def __init__(self, path: str | os.PathLike[str], step: str, waited: float) -> None:
        LtxpoolError.__init__(self, path, step, None, f"busy, gave up after {waited * 1000:.1f} ms")
        self.args = (os.fspath(path), step, waited)
        self.waited = waited


class LockFileError(LtxpoolError):
    """A lock file could not be opened or locked, or is not a regular file we own."""
