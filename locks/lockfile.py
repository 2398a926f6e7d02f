"""One lock file, opened once and kept open by the process that uses it.

filelock's ``lock_descriptor`` / ``unlock_descriptor`` lock a descriptor the caller
owns (flock on Unix) for ~5 us per acquire + release, against ~220-335 us for
``FileLock``, which reopens the file on every acquire (LOCK-MEASUREMENTS.md). So a
:class:`LockFile` opens its file once, lazily, relative to an open directory
descriptor (the lock always lands in the directory we were given, even if a path
component is later swapped), with ``O_NOFOLLOW`` (a symlink planted where a lock file
belongs is refused, never followed), and keeps the descriptor for its lifetime.

Who may open a lock file is who may stall everyone: flock takes LOCK_SH or LOCK_EX
on any descriptor, even a read-only one, so a user who can merely *read* a lock
file can hold it forever (issue 13). Lock files are therefore 0600, openable only
by the pool's user; where another user's programs must share the protocol (an app
user running ``ltxpool replicate`` into a replica the pool compacts), the group
named by the environment variable ``LTXPOOL_LOCK_GROUP`` gets them: 0660, that
group. An environment variable rather than a config key because every ltxpool
process takes these locks (the pool, ``replicate``, ``compact``, ``restore``), and
it is set by whoever starts them, the pool's own user. A lock file we own whose
mode or group differs is corrected (fchmod/fchown on the descriptor, never by name);
one owned by someone else is used as it is (their directory, their risk: the wait
deadline and the named holder still bound what it can cost). A lock file with more
than one hard link is refused: it could be another file of ours, whose mode we
would change.

Lock files are created once and never deleted by anyone: deleting a lock file breaks
flock (two processes could each lock a different inode under the same name). As
filelock does, we check ``st_nlink`` after each acquire: if someone deleted the file
anyway, we drop the lock, reopen (recreating the file) and try again.
"""

from __future__ import annotations

import functools
import grp
import os
import stat

from filelock import lock_descriptor, unlock_descriptor

from ltxpool.locks.errors import LockFileError

__all__ = ["LockFile", "LOCK_FILE_MODE", "GROUP_LOCK_FILE_MODE", "LOCK_GROUP_VARIABLE", "lock_group"]

#: Owner read/write only: nobody else can open the file, so nobody else can flock it.
LOCK_FILE_MODE = 0o600
#: With ``LTXPOOL_LOCK_GROUP`` set: that group too.
GROUP_LOCK_FILE_MODE = 0o660
LOCK_GROUP_VARIABLE = "LTXPOOL_LOCK_GROUP"

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


@functools.lru_cache(maxsize=4)
def _resolve_group(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise LockFileError(LOCK_GROUP_VARIABLE, "lock group", None, f"no group named {value!r}") from None


def lock_group() -> int | None:
    """The gid that shares the lock files (``LTXPOOL_LOCK_GROUP``: a name or a number), or None."""
    value = os.environ.get(LOCK_GROUP_VARIABLE, "")
    return _resolve_group(value) if value else None


class LockFile:
    """An exclusive, non-blocking flock on one file inside an open directory."""

    def __init__(self, dir_fd: int, directory: str, name: str) -> None:
        self._dir_fd = dir_fd
        self.path = os.path.join(directory, name)
        self._name = name
        self._fd: int | None = None

    def _open(self) -> int:
        group = lock_group()
        try:
            fd = os.open(self._name, _OPEN_FLAGS, LOCK_FILE_MODE, dir_fd=self._dir_fd)
        except OSError as exc:
            raise LockFileError.from_oserror(self.path, "open lock file", exc) from exc
        try:
            self._restrict(fd, group)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _restrict(self, fd: int, group: int | None) -> None:
        """Make a lock file we own openable by us (and the lock group) only."""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LockFileError(self.path, "open lock file", None, "not a regular file")
            if st.st_nlink > 1:
                raise LockFileError(self.path, "open lock file", None,
                                    f"has {st.st_nlink} hard links; a lock file has one")
            if st.st_uid != os.geteuid():
                return
            if group is not None and st.st_gid != group:
                os.fchown(fd, -1, group)
            mode = LOCK_FILE_MODE if group is None else GROUP_LOCK_FILE_MODE
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
        except OSError as exc:
            raise LockFileError.from_oserror(self.path, "restrict lock file", exc) from exc

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

    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the file we lock (None before the first open), for ``/proc/locks``."""
        if self._fd is None:
            return None
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def unlock(self) -> None:
        if self._fd is not None:
            unlock_descriptor(self._fd)

    def close(self) -> None:
        """Close the descriptor; the kernel drops any flock held through it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
