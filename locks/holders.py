"""Who holds a lock file: pid, user and command, from ``/proc/locks``.

A wait that runs out must say what it waited for. flock has no "who holds it" call,
but the kernel lists every lock in ``/proc/locks``, one line each::

    3: FLOCK  ADVISORY  WRITE 6251 fe:00:2220821 0 EOF
    3: -> FLOCK  ADVISORY  WRITE 6300 fe:00:2220821 0 EOF     (a waiter, not a holder)

(id, class, advisory/mandatory, READ or WRITE, pid, major:minor:inode in hex, hex,
decimal, range). We match the inode (and device) of our own lock file, from
``fstat`` of the descriptor we hold, so a name swapped since cannot mislead us; then
``/proc/<pid>/status`` gives the holder's uid and parent, ``/proc/<pid>/comm`` its
command. The pid is the process that took the lock; a descriptor inherited across
fork keeps that pid even if the locker has exited (then user and command are "?").

Reading ``/proc`` is best effort: a holder gone between the two reads, or a pid of
another pid namespace (shown as 0 or absent), yields what could be read.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from ltxpool.display import escape

__all__ = ["Holder", "LockTable", "holders_by_inode", "holders_of", "is_sibling"]

_PROC_LOCKS = "/proc/locks"


@dataclass(frozen=True)
class Holder:
    """One process holding a flock: ``pid 6251 (user nobody, uid 65534, command python3)``."""

    pid: int
    uid: int | None
    user: str
    command: str
    ppid: int | None
    mode: str  # "READ" (LOCK_SH) or "WRITE" (LOCK_EX)

    def __str__(self) -> str:
        uid = "?" if self.uid is None else str(self.uid)
        return f"pid {self.pid} (user {escape(self.user)}, uid {uid}, command {escape(self.command)}, {self.mode})"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _describe(pid: int, mode: str) -> Holder:
    uid: int | None = None
    ppid: int | None = None
    status = _read(f"/proc/{pid}/status") if pid > 0 else None
    for line in (status or "").splitlines():
        key, _, value = line.partition(":")
        if key == "Uid" and value.split():
            uid = int(value.split()[0])
        elif key == "PPid" and value.strip():
            ppid = int(value.strip())
    user = "?"
    if uid is not None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    command = (_read(f"/proc/{pid}/comm") or "?").rstrip("\n") if pid > 0 else "?"
    return Holder(pid, uid, user, command, ppid, mode)


class LockTable:
    """One read of ``/proc/locks``: the FLOCK holders by inode, for many questions.

    ``status`` over thousands of replicas asks about every level's lock files; one
    read answers them all, instead of one read (of a table that grows with the
    host's locks) per replica.
    """

    def __init__(self, text: str) -> None:
        self._by_inode: dict[int, list[tuple[int, int, str]]] = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
                continue
            with contextlib.suppress(ValueError):
                major, minor, inode = fields[5].split(":")
                self._by_inode.setdefault(int(inode), []).append(
                    (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]), fields[3])
                )

    def locked(self, inode: int) -> bool:
        """Whether any FLOCK is held on a file of this inode number (on any device)."""
        return inode in self._by_inode

    @classmethod
    def read(cls) -> LockTable:
        """The table as the kernel shows it now (empty if it cannot be read)."""
        return cls(_read(_PROC_LOCKS) or "")

    def holders(self, files: Iterable[tuple[int, int]]) -> dict[tuple[int, int], list[Holder]]:
        """The holders of every ``(st_dev, st_ino)`` in ``files`` (see :func:`holders_by_inode`)."""
        found: dict[tuple[int, int], list[Holder]] = {}
        for dev, ino in set(files):
            lines = self._by_inode.get(ino, [])
            exact = [entry for entry in lines if entry[0] == dev]
            found[(dev, ino)] = [_describe(pid, mode) for _dev, pid, mode in (exact or lines)]
        return found


def holders_by_inode(files: Iterable[tuple[int, int]]) -> dict[tuple[int, int], list[Holder]]:
    """The holders of every ``(st_dev, st_ino)`` in ``files``, from one read of ``/proc/locks``.

    Only FLOCK locks count (ours are flocks); waiters (``->``) are not holders.
    ``/proc/locks`` names the filesystem's device, which ``st_dev`` of a btrfs
    subvolume does not match, so a file whose device matches no line is matched by
    inode alone.
    """
    return LockTable.read().holders(files)


def holders_of(path: str | os.PathLike[str]) -> list[Holder]:
    """The processes holding a flock on the file at ``path`` (for ``status`` and metrics).

    The file is ``lstat``-ed, never opened: asking who holds a lock takes none, and a
    symlink planted in its place names nothing.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return []
    key = (st.st_dev, st.st_ino)
    return holders_by_inode([key])[key]


def is_sibling(holder: Holder, parent: int) -> bool:
    """Whether ``holder`` is a child of ``parent`` (the supervisor) run by our own user.

    That is what "a worker of this pool" means: forked by the same supervisor, so its
    claim is ordinary contention; anyone else's is to be named.
    """
    return holder.ppid == parent and holder.uid == os.getuid()
