"""One full look at the ``[[databases]]`` entries: which SQLite databases they match right now.

Used at start (before the change notification takes over), as the periodic safety
net for missed events, and by ``status`` and the janitor, which need the list but
no notification. Nothing is followed that could lead out of an entry's folder: a
symlinked sub-folder is not descended into, a symlinked file is no database, and
a database whose real path is not its path (a folder above it was swapped for a
link) is skipped. A folder reached twice (a bind mount of a folder inside itself)
is listed once.

A file is a database when its first 16 bytes are SQLite's header string; an empty
file (an app between creating and writing it) is not one yet, and a later event or
scan finds it. ``-wal``, ``-shm`` and ``-journal`` files never count. What a scan
costs: one listing per folder; a name that does not match the pattern costs
nothing more, a matching one an ``lstat`` and, if it is a regular file, a 16-byte read.
Nothing but a regular file is ever opened (a FIFO or a device named ``x.db``
could block or have side effects on open).
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence

from ltxpool.discovery.entries import (
    SIDE_FILE_SUFFIXES,
    DatabaseDir,
    DatabaseEntry,
    DatabaseFile,
    Target,
    remote_for,
    replica_for,
)
from ltxpool.display import escape

__all__ = ["SQLITE_HEADER", "is_sqlite_database", "matches", "scan", "scan_dir",
           "scan_entries", "claim", "covers", "holds_database", "is_database_at", "walk", "folders_of"]

SQLITE_HEADER = b"SQLite format 3\x00"

log = logging.getLogger("ltxpool.discovery")

#: Called with each folder before it is listed (the watcher adds its watch there).
OnFolder = Callable[[str], None]
#: Whether a database path is wanted at all (a worker's shard), asked before its header is read.
Keep = Callable[[str], bool]


def matches(entry: DatabaseDir, name: str) -> bool:
    """Whether a file name is a candidate of ``entry`` (before its header is read)."""
    return fnmatch.fnmatchcase(name, entry.pattern) and not name.endswith(SIDE_FILE_SUFFIXES)


def is_sqlite_database(path: str, dir_fd: int | None = None) -> bool:
    """A regular file (never through a link) that starts with SQLite's header; never blocks on a FIFO.

    The ``lstat`` first means a FIFO, socket or device is never even opened; the
    ``fstat`` after opening catches one swapped in between (O_NONBLOCK, O_NOCTTY:
    that open cannot hang or take a terminal).
    """
    try:
        if not stat.S_ISREG(os.lstat(path, dir_fd=dir_fd).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
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


def walk(top: str, recursive: bool, wanted: Callable[[str], bool],
          on_folder: OnFolder | None = None) -> Iterator[tuple[str, list[str]]]:
    """(folder, names of its files that are ``wanted``) under ``top``, never through a symlinked folder.

    Names are filtered while listing, so a folder of a million other files costs one
    listing and no list of a million names. ``on_folder`` runs before each listing.
    """
    try:
        top_stat = os.lstat(top)
    except OSError as exc:
        _not_listed(top, exc)
        return
    if not stat.S_ISDIR(top_stat.st_mode):
        log.debug("%s: not a folder (a link?); not scanned", escape(top))
        return
    seen = {(top_stat.st_dev, top_stat.st_ino)}
    pending = [top]
    while pending:
        folder = pending.pop()
        if on_folder is not None:
            on_folder(folder)
        try:
            with os.scandir(folder) as entries:
                files, folders = [], []
                for item in entries:
                    if item.is_dir(follow_symlinks=False):
                        if recursive:
                            folders.append(item)
                    elif wanted(item.name) and item.is_file(follow_symlinks=False):
                        files.append(item.name)
                subfolders = []
                for item in folders:
                    try:
                        found = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if (found.st_dev, found.st_ino) in seen:
                        log.debug("%s: already listed (a bind mount?); not scanned again", escape(item.path))
                        continue
                    seen.add((found.st_dev, found.st_ino))
                    subfolders.append(item.path)
        except OSError as exc:
            _not_listed(folder, exc)
            continue
        yield folder, files
        pending.extend(sorted(subfolders, reverse=True))


def _not_listed(folder: str, exc: OSError) -> None:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        log.debug("%s: gone before it was scanned", escape(folder))
    else:
        log.warning("%s: not scanned: %s", escape(folder), exc.strerror)


def is_database_at(path: str) -> bool:
    """The rules for one path: SQLite's header, never through a link, real path == path."""
    if not is_sqlite_database(path):
        return False
    if os.path.realpath(path) != path:
        log.debug("%s: reached through a link; ignored", escape(path))
        return False
    return True


def _scan_dir(entry: DatabaseDir, on_folder: OnFolder | None, keep: Keep | None) -> dict[str, Target]:
    found: dict[str, Target] = {}
    for folder, names in walk(entry.dir, entry.recursive, lambda name: matches(entry, name), on_folder):
        for name in names:
            path = os.path.join(folder, name)
            if keep is not None and not keep(path):
                continue
            if not is_database_at(path):
                log.debug("%s: not a SQLite database (yet); ignored", escape(path))
                continue
            found[path] = Target(path, replica_for(entry, path), entry.interval, remote_for(entry, path))
    return found


def scan_dir(entry: DatabaseDir) -> dict[str, Target]:
    """Every database ``entry`` matches now, by path."""
    return _scan_dir(entry, None, None)


def scan_entries(entries: Sequence[DatabaseEntry], *, on_folder: OnFolder | None = None,
                 keep: Keep | None = None) -> dict[str, Target]:
    """:func:`scan`, calling ``on_folder`` before listing each folder and skipping what ``keep`` refuses."""
    found: dict[str, Target] = {}
    for entry in entries:
        if isinstance(entry, DatabaseFile):
            if on_folder is not None:
                on_folder(os.path.dirname(entry.path))
            if (entry.path not in found and (keep is None or keep(entry.path))
                    and is_sqlite_database(entry.path)):
                found[entry.path] = Target(entry.path, entry.replica, entry.interval, entry.remote)
            continue
        for path, target in _scan_dir(entry, on_folder, keep).items():
            found.setdefault(path, target)
    return found


def scan(entries: Sequence[DatabaseEntry]) -> dict[str, Target]:
    """Every database the entries match now, by path; the first entry that names a database wins."""
    return scan_entries(entries)


def claim(entries: Sequence[DatabaseEntry], path: str) -> tuple[DatabaseEntry, Target] | None:
    """The entry whose rules name ``path``, and the target it would be if it is a database: the
    first entry in order, the same precedence as :func:`scan` (no file is touched)."""
    folder, name = os.path.split(path)
    for entry in entries:
        if isinstance(entry, DatabaseFile):
            if entry.path == path:
                return entry, Target(path, entry.replica, entry.interval, entry.remote)
        elif matches(entry, name) and covers(entry, folder):
            return entry, Target(path, replica_for(entry, path), entry.interval, remote_for(entry, path))
    return None


def holds_database(entry: DatabaseEntry, path: str) -> bool:
    """Whether ``path`` is a database by ``entry``'s rules (a named file is not asked for its real path)."""
    return is_sqlite_database(path) if isinstance(entry, DatabaseFile) else is_database_at(path)


def covers(entry: DatabaseDir, folder: str) -> bool:
    """Whether databases in ``folder`` are ``entry``'s to find: its ``dir``, or (recursive) one below it."""
    return folder == entry.dir or (entry.recursive and folder.startswith(entry.dir.rstrip(os.sep) + os.sep))


def folders_of(entry: DatabaseEntry) -> Iterator[str]:
    """Every folder that exists and ``entry`` needs watched: a file's parent, a dir and, when
    recursive, its sub-folders (never through a link). One listing per folder."""
    if isinstance(entry, DatabaseFile):
        parent = os.path.dirname(entry.path)
        if os.path.isdir(parent):
            yield parent
        return
    for folder, _ in walk(entry.dir, entry.recursive, lambda name: False):
        yield folder
