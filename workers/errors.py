"""The root of every error ltxpool raises.

It lives at the bottom, below every layer, so that each layer's own ``errors``
module (``ltxpool.locks.errors``, ``ltxpool.ltx.errors``, ``ltxpool.replica.errors``,
``ltxpool.replicate.errors``, ``ltxpool.pool.errors``) can derive from it while
importing nothing above itself. Each error carries the path it concerns, the step
that failed and the errno (``None`` where no system call failed). Errors cross
process boundaries (a worker's failure is logged and counted by the supervisor), so
each class says how it pickles with an explicit ``__reduce__`` (as filelock does):
its constructor and the arguments to call it with. "Nothing to do" is never an
error: it is a return value.
"""

from __future__ import annotations

import errno as errno_names
import os
from typing import Any, Self

from ltxpool.display import escape

__all__ = ["LtxpoolError"]


class LtxpoolError(Exception):
    """Root of ltxpool's errors: a path, the step that failed, an errno and a reason."""

    def __init__(self, path: str | os.PathLike[str], step: str, errno: int | None, reason: str) -> None:
        super().__init__(os.fspath(path), step, errno, reason)
        self.path = os.fspath(path)
        self.step = step
        self.errno = errno
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.path, self.step, self.errno, self.reason)

    def __str__(self) -> str:
        code = f" [{errno_names.errorcode.get(self.errno, self.errno)}]" if self.errno else ""
        return f"{escape(self.path)}: {self.step}: {escape(self.reason)}{code}"

    @classmethod
    def from_oserror(cls, path: str | os.PathLike[str], step: str, exc: OSError) -> Self:
        """Wrap an OSError so that the step that failed travels with it."""
        return cls(path, step, exc.errno, exc.strerror or str(exc))
