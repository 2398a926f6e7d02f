"""The compaction claim: at most one worker compacts into a (replica, level) at a time.

A claim is a non-blocking exclusive lock on ``.ltxpool.claim`` inside the level
directory being written. A worker that finds it taken *by another worker of its own
pool* moves on to other work ("taken" is an ordinary outcome, not an error). The
kernel drops a flock when its process dies, so a SIGKILLed worker never leaves a
stale claim behind: the next worker simply takes it. Like every lock object, a claim
is made in the process that uses it.

Taken by anyone else, the claim is not "nothing to do" (issue 13: a stranger's
flock on the claim made ``ltxpool compact`` say exactly that while level 0 was
ahead): :meth:`Claim.held` raises :class:`ClaimHeld`, which names the holders from
``/proc/locks``. "A worker of this pool" is a child of the pool's supervisor run by
our own user (``pool``: the supervisor's pid), or this very process. A claim never
waits, so it needs no deadline of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ltxpool.locks.errors import ClaimHeld, LockFileError
from ltxpool.locks.holders import Holder, holders_by_inode, is_sibling
from ltxpool.locks.lockfile import LockFile

__all__ = ["Claim", "CLAIM_NAME"]

CLAIM_NAME = ".ltxpool.claim"

#: How often a busy claim is tried again when /proc/locks shows no holder (it was just released).
_ATTEMPTS = 3


class Claim:
    """``with Claim(level_dir, pool=supervisor_pid).held() as mine: if mine: ...``

    ``pool=None`` (a command run by hand): every other holder is named.
    """

    def __init__(self, directory: str | os.PathLike[str], *, pool: int | None = None,
                 dir_fd: int | None = None) -> None:
        """``dir_fd``: the open directory to claim in (``directory`` then names it in messages)."""
        self.directory = os.fspath(directory)
        self.pool = pool
        self._pid = os.getpid()
        try:
            self._dir_fd = (os.dup(dir_fd) if dir_fd is not None else
                            os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError as exc:
            raise LockFileError.from_oserror(self.directory, "open directory", exc) from exc
        self._file = LockFile(self._dir_fd, self.directory, CLAIM_NAME)

    def holders(self) -> list[Holder]:
        """The processes holding this claim right now (this process included, through another object)."""
        key = self._file.identity()
        if key is None:
            return []
        return holders_by_inode([key])[key]

    def _peer(self, holder: Holder) -> bool:
        return holder.pid == self._pid or (self.pool is not None and is_sibling(holder, self.pool))

    def _take(self) -> bool:
        """True: ours. False: a worker of this pool has it. Raises ClaimHeld for anyone else."""
        for _ in range(_ATTEMPTS):
            if self._file.try_lock():
                return True
            holders = self.holders()
            if holders:
                strangers = [holder for holder in holders if not self._peer(holder)]
                if strangers:
                    raise ClaimHeld(self._file.path, "claim", strangers)
                return False
        # Busy each time yet never listed: a holder /proc/locks cannot show us (another
        # pid namespace). Unknown is not "one of ours".
        raise ClaimHeld(self._file.path, "claim", [])

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Yield True with the claim held, or False at once if another worker of this pool holds it."""
        if self._pid != os.getpid():
            raise LockFileError(self.directory, "claim", None, "claim object inherited across fork; make a new one")
        mine = self._take()
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
