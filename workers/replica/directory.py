"""Directories held open: every operation inside a replica goes relative to one of them.

A tenant may own its replica directory and swap any folder in it for a symlink at any
moment, including while the pool waits for a lock the tenant can prolong. A check
("not a symlink") followed later by an operation *by path* is then a check of one
directory and an operation on another (TOCTOU): the janitor, the quarantine,
retention, the compactor and replicate's state all once did just that outside the
replica. So a :class:`Directory` is an open descriptor, reached from its parent's
descriptor one component at a time with ``O_DIRECTORY | O_NOFOLLOW`` (a symlink
anywhere on the way is refused, never followed), and every operation on its entries
is an ``*at`` call on that descriptor (``dir_fd=`` in Python's ``os``): the
directory that was checked, locked and listed is the one that is changed, whatever
its path now leads to. Renaming the directory itself elsewhere is harmless: the
operations follow the inode, which only its owner could move, and only where its
owner may write.

systemd-tmpfiles walks the same way (``chase()`` with ``CHASE_NOFOLLOW``,
``openat``/``unlinkat`` on the parent's descriptor). Entries with more than one hard
link are not trusted as replica content (:func:`trusted_file`): ltxpool and
Litestream only ever rename complete files into place, so a second link is someone
else's file planted in the replica.

The path a Directory carries is for messages only; nothing is resolved through it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from types import TracebackType

from ltxpool.locks.claim import Claim
from ltxpool.locks.dirlock import DEFAULT_TIMEOUT, DirLock
from ltxpool.replica.errors import DirectoryError

__all__ = ["Directory", "DirectoryStamp", "trusted_file", "dir_lock", "claim_in", "DIRECTORY_FLAGS", "RACY_NS"]

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _refusal(path: str, step: str, exc: OSError) -> DirectoryError:
    # O_NOFOLLOW on a symlink gives ELOOP; O_DIRECTORY on a symlink or a file, ENOTDIR.
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        return DirectoryError(path, step, exc.errno, "is a symlink; refusing to follow it")
    return DirectoryError.from_oserror(path, step, exc)


#: A stamp taken less than this after its directory's last change may share the kernel
#: clock tick of a change still to come (git's "racily clean" entries; see DirectoryStamp).
RACY_NS = 1_000_000_000


@dataclass(frozen=True)
class DirectoryStamp:
    """What a directory's inode said at one moment: which directory (dev, inode) and its last change.

    Adding, removing or renaming an entry sets the directory's mtime and ctime; ``utime``
    can set the mtime back but not the ctime, which only moves forward. So an equal
    stamp means the same directory with the same entries -- unless a change came in the
    same kernel clock tick as the last one before the stamp was taken. ``racy`` tells
    that case: the stamp was taken within :data:`RACY_NS` of that last change, and
    proves nothing about what followed.
    """

    dev: int
    ino: int
    mtime_ns: int
    ctime_ns: int
    #: Wall time just before the stat was taken.
    taken_ns: int

    @classmethod
    def of(cls, st: os.stat_result, taken_ns: int) -> DirectoryStamp:
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, taken_ns)

    @property
    def key(self) -> tuple[int, int, int, int]:
        """What two looks at an unchanged directory agree on."""
        return self.dev, self.ino, self.mtime_ns, self.ctime_ns

    @property
    def racy(self) -> bool:
        return self.taken_ns - max(self.mtime_ns, self.ctime_ns) < RACY_NS


def trusted_file(st: os.stat_result) -> str | None:
    """Why an entry cannot be replica content (not a regular file, a second hard link), or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({stat.filemode(st.st_mode)}; symlinks are not followed)"
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links; a replica file never has more than one, so it is not trusted"
    return None


class Directory:
    """One open directory; ``with Directory.open(path) as d: d.child("ltx")...``.

    ``fd`` is the only handle operations use. Closing is explicit (or at garbage
    collection, as for a file object); children are independent and close on their own.
    """

    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Directory:
        """Open the directory at ``path``; its last component must not be a symlink.

        The components above it are the operator's (config, command line) and are
        checked once at start by :mod:`ltxpool.replica.roots`.
        """
        name = os.fspath(path)
        try:
            return cls(os.open(name, DIRECTORY_FLAGS), name)
        except OSError as exc:
            raise _refusal(name, "open directory", exc) from exc

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise DirectoryError(self.path, "use directory", errno.EBADF, "directory was closed")
        return self._fd

    def display(self, name: str) -> str:
        """The path of entry ``name``, for messages."""
        return os.path.join(self.path, name)

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return st.st_dev, st.st_ino

    def stamp(self) -> DirectoryStamp:
        """This directory's :class:`DirectoryStamp`, through the descriptor (take it before listing)."""
        taken = time.time_ns()
        try:
            return DirectoryStamp.of(os.fstat(self.fd), taken)
        except OSError as exc:
            raise DirectoryError.from_oserror(self.path, "stat directory", exc) from exc

    def owner(self) -> tuple[int, int]:
        st = os.fstat(self.fd)
        return st.st_uid, st.st_gid

    def child(self, name: str, *, create: bool = False, mode: int | None = None) -> Directory:
        """Open entry ``name`` as a directory without following a link; create it if asked.

        A directory this process creates takes the owner of its parent when the process
        is root (a tenant's replica stays the tenant's) and ``mode``, by default its
        parent's (so a replica made 0700 for a 0600 database stays 0700 all the way
        down), never group- or world-writable.
        """
        path = self.display(name)
        if create:
            if mode is None:
                mode = stat.S_IMODE(os.fstat(self.fd).st_mode)
            try:
                os.mkdir(name, mode & 0o755, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _refusal(path, "create directory", exc) from exc
            else:
                created = self.child(name)
                created.adopt_owner_of(self)
                return created
        try:
            return Directory(os.open(name, DIRECTORY_FLAGS, dir_fd=self.fd), path)
        except OSError as exc:
            raise _refusal(path, "open directory", exc) from exc

    def optional_child(self, name: str) -> Directory | None:
        """:meth:`child`, or None when there is no entry ``name`` (an empty level)."""
        try:
            return self.child(name)
        except DirectoryError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def adopt_owner_of(self, parent: Directory) -> None:
        """When running as root, give this directory its parent's owner and group."""
        if os.geteuid() == 0:
            uid, gid = parent.owner()
            try:
                os.fchown(self.fd, uid, gid)
            except OSError as exc:
                raise DirectoryError.from_oserror(self.path, "chown directory", exc) from exc

    def scandir(self) -> list[os.DirEntry[str]]:
        """The entries, each ``stat``-able without following links (relative to this fd)."""
        try:
            with os.scandir(self.fd) as entries:
                return list(entries)
        except OSError as exc:
            raise DirectoryError.from_oserror(self.path, "list directory", exc) from exc

    def names(self) -> list[str]:
        try:
            return os.listdir(self.fd)
        except OSError as exc:
            raise DirectoryError.from_oserror(self.path, "list directory", exc) from exc

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``openat`` of entry ``name``, never through a symlink (``O_NOFOLLOW`` is added)."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def rename(self, name: str, target: Directory, target_name: str) -> None:
        """``renameat``: both ends are the directories held, not what their paths lead to now."""
        os.rename(name, target_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def fsync(self) -> None:
        """Make this directory's entries (a rename, a create, an unlink) durable."""
        os.fsync(self.fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Directory({self.path!r}, fd={self._fd})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(f"{self!r}: an open directory does not cross processes; send its path and reopen")


def dir_lock(directory: Directory, *, timeout: float = DEFAULT_TIMEOUT) -> DirLock:
    """The directory lock of exactly this open directory (not of what its path leads to)."""
    return DirLock(directory.path, dir_fd=directory.fd, timeout=timeout)


def claim_in(directory: Directory, *, pool: int | None = None) -> Claim:
    """The compaction claim of exactly this open directory (``pool``: see ``Claim``)."""
    return Claim(directory.path, dir_fd=directory.fd, pool=pool)
