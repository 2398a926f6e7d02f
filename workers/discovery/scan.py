"""One full look at the ``[[databases]]`` entries: which SQLite databases they match right now.

Used at start (before the change notification takes over), as the periodic safety
net for missed events, and by ``status`` and the janitor, which need the list but
no notification. Nothing is followed that could lead out of an entry's folder: a
symlinked sub-folder is not descended into, a symlinked file is no database, and
a database whose real path is not its path (a folder above it was swapped for a
link) is skipped.

A file is a database when its first 16 bytes are SQLite's header string; an empty
file (an app between creating and writing it) is not one yet, and a later event or
scan finds it. ``-wal``, ``-shm`` and ``-journal`` files never count.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
from collections.abc import Iterator, Sequence

from ltxpool.discovery.entries import SIDE_FILE_SUFFIXES, DatabaseDir, DatabaseEntry, DatabaseFile, Target, replica_for

__all__ = ["SQLITE_HEADER", "is_sqlite_database", "matches", "scan", "scan_dir"]

SQLITE_HEADER = b"SQLite format 3\x00"

log = logging.getLogger("ltxpool.discovery")


def matches(entry: DatabaseDir, name: str) -> bool:
    """Whether a file name is a candidate of ``entry`` (before its header is read)."""
    return fnmatch.fnmatchcase(name, entry.pattern) and not name.endswith(SIDE_FILE_SUFFIXES)


def is_sqlite_database(path: str, dir_fd: int | None = None) -> bool:
    """A regular file (never through a link) that starts with SQLite's header; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, len(SQLITE_HEADER), 0) == SQLITE_HEADER
    except OSError:
        return False
    finally:
        os.close(fd)


def _walk(top: str, recursive: bool) -> Iterator[tuple[str, list[str]]]:
    """(folder, names of its regular files) under ``top``, never through a symlinked folder."""
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                files, folders = [], []
                for item in entries:
                    if item.is_dir(follow_symlinks=False):
                        folders.append(item.path)
                    elif item.is_file(follow_symlinks=False):
                        files.append(item.name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.debug("%s: not scanned: %s", folder, exc.strerror)
            continue
        yield folder, files
        if recursive:
            pending.extend(sorted(folders, reverse=True))


def scan_dir(entry: DatabaseDir) -> dict[str, Target]:
    """Every database ``entry`` matches now, by path."""
    found: dict[str, Target] = {}
    for folder, names in _walk(entry.dir, entry.recursive):
        for name in names:
            if not matches(entry, name):
                continue
            path = os.path.join(folder, name)
            if not is_sqlite_database(path):
                log.debug("%s: not a SQLite database; ignored", path)
                continue
            if os.path.realpath(path) != path:
                log.debug("%s: reached through a link; ignored", path)
                continue
            found[path] = Target(path, replica_for(entry, path), entry.interval)
    return found


def scan(entries: Sequence[DatabaseEntry]) -> dict[str, Target]:
    """Every database the entries match now, by path; the first entry that names a database wins."""
    found: dict[str, Target] = {}
    for entry in entries:
        if isinstance(entry, DatabaseFile):
            if entry.path not in found and is_sqlite_database(entry.path):
                found[entry.path] = Target(entry.path, entry.replica, entry.interval)
            continue
        for path, target in scan_dir(entry).items():
            found.setdefault(path, target)
    return found
