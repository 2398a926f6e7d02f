"""The compaction claim: at most one worker compacts into a (replica, level) at a time.

A claim is a non-blocking exclusive lock on ``.ltxpool.claim`` inside the level
directory being written. A worker that finds it taken moves on to other work ("taken"
is an ordinary outcome, not an error). The kernel drops a flock when its process
dies, so a SIGKILLed worker never leaves a stale claim behind: the next worker simply
takes it. Like every lock object, a claim is made in the process that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ltxpool.locks.errors import LockFileError
from ltxpool.locks.lockfile import LockFile

__all__ = ["Claim", "CLAIM_NAME"]

CLAIM_NAME = ".ltxpool.claim"


class Claim:
    """``with Claim(level_dir).held() as mine: if mine: ...``"""

    def __init__(self, directory: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
        """``dir_fd``: the open directory to claim in (``directory`` then names it in messages)."""
        self.directory = os.fspath(directory)
        self._pid = os.getpid()
        try:
            self._dir_fd = (os.dup(dir_fd) if dir_fd is not None else
                            os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError as exc:
            raise LockFileError.from_oserror(self.directory, "open directory", exc) from exc
        self._file = LockFile(self._dir_fd, self.directory, CLAIM_NAME)

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Yield True with the claim held, or False at once if another process holds it."""
        if self._pid != os.getpid():
            raise LockFileError(self.directory, "claim", None, "claim object inherited across fork; make a new one")
        mine = self._file.try_lock()
        try:
            yield mine
        finally:
            if mine:
                self._file.unlock()

    def close(self) -> None:
        self._file.close()
        os.close(self._dir_fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
