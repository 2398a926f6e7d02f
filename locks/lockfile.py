"""One lock file, opened once and kept open by the process that uses it.

filelock's ``lock_descriptor`` / ``unlock_descriptor`` lock a descriptor the caller
owns (flock on Unix) for ~5 us per acquire + release, against ~220-335 us for
``FileLock``, which reopens the file on every acquire (LOCK-MEASUREMENTS.md). So a
:class:`LockFile` opens its file once, lazily, relative to an open directory
descriptor (the lock always lands in the directory we were given, even if a path
component is later swapped), with ``O_NOFOLLOW`` (a symlink planted where a lock file
belongs is refused, never followed), and keeps the descriptor for its lifetime.

Lock files are created once and never deleted by anyone: deleting a lock file breaks
flock (two processes could each lock a different inode under the same name). As
filelock does, we check ``st_nlink`` after each acquire: if someone deleted the file
anyway, we drop the lock, reopen (recreating the file) and try again.
"""

from __future__ import annotations

import os
import stat

from filelock import lock_descriptor, unlock_descriptor

from ltxpool.locks.errors import LockFileError

__all__ = ["LockFile", "LOCK_FILE_MODE"]

#: Owner read/write, group/other read: never world-writable (the umask may remove more).
LOCK_FILE_MODE = 0o644

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class LockFile:
    """An exclusive, non-blocking flock on one file inside an open directory."""

    def __init__(self, dir_fd: int, directory: str, name: str) -> None:
        self._dir_fd = dir_fd
        self.path = os.path.join(directory, name)
        self._name = name
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            fd = os.open(self._name, _OPEN_FLAGS, LOCK_FILE_MODE, dir_fd=self._dir_fd)
        except OSError as exc:
            raise LockFileError.from_oserror(self.path, "open lock file", exc) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LockFileError(self.path, "open lock file", None, "not a regular file")
        self._fd = fd
        return fd

    def try_lock(self) -> bool:
        """Take the lock if it is free; never waits. Returns whether it was taken."""
        fd = self._fd if self._fd is not None else self._open()
        try:
            if not lock_descriptor(fd, blocking=False):
                return False
            if os.fstat(fd).st_nlink > 0:
                return True
        except OSError as exc:
            raise LockFileError.from_oserror(self.path, "lock", exc) from exc
        # The file was deleted under us: our lock guards an orphaned inode. Start over
        # on a fresh file so that we contend with everyone else again.
        self.unlock()
        self.close()
        return self.try_lock()

    def unlock(self) -> None:
        if self._fd is not None:
            unlock_descriptor(self._fd)

    def close(self) -> None:
        """Close the descriptor; the kernel drops any flock held through it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
