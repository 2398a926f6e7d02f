"""Change notification for the ``[[databases]]`` entries (inotify, through ``inotify_simple``).

One watch per folder (the parent of a ``path`` entry; ``dir`` and, when
recursive, every sub-folder), never through a link. ``start`` adds the watches
before it scans, so a database created in between is seen by one or the other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inotify_simple import INotify, flags

from ltxpool.discovery.entries import SIDE_FILE_SUFFIXES, DatabaseDir, DatabaseEntry, DatabaseFile, Target, replica_for
from ltxpool.discovery.scan import is_sqlite_database, matches, scan

__all__ = ["Changes", "DatabaseWatch"]

log = logging.getLogger("ltxpool.discovery")

_MASK = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.MODIFY | flags.CLOSE_WRITE
         | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)
#: What counts as a write of a database: its own connection's open and close only
#: create, close and delete the -wal and -shm, so a step never triggers the next.
_WRITTEN = flags.MODIFY | flags.MOVED_TO


@dataclass(frozen=True)
class Changes:
    """What happened since the last look: databases found, gone, written."""

    added: tuple[Target, ...] = ()
    removed: tuple[str, ...] = ()
    changed: frozenset[str] = field(default_factory=frozenset)


class DatabaseWatch:
    """The databases the entries match, kept current by the kernel's change notification."""

    def __init__(self, entries: Sequence[DatabaseEntry], *, owns: Callable[[str], bool] = lambda path: True) -> None:
        self.entries = list(entries)
        self.owns = owns
        self.known: dict[str, Target] = {}
        self._inotify = INotify()
        self._folders: dict[int, tuple[str, DatabaseEntry]] = {}

    @property
    def watches(self) -> int:
        return len(self._folders)

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def _watch(self, folder: str, entry: DatabaseEntry) -> None:
        try:
            wd = self._inotify.add_watch(folder, _MASK)
        except OSError as exc:
            log.debug("%s: not watched: %s", folder, exc.strerror)
            return
        self._folders[wd] = (folder, entry)

    def _watch_tree(self, entry: DatabaseEntry) -> None:
        if isinstance(entry, DatabaseFile):
            self._watch(os.path.dirname(entry.path), entry)
            return
        pending = [entry.dir]
        while pending:
            folder = pending.pop()
            self._watch(folder, entry)
            if not entry.recursive:
                continue
            try:
                with os.scandir(folder) as items:
                    pending.extend(item.path for item in items if item.is_dir(follow_symlinks=False))
            except OSError:
                continue

    def _owned(self, found: dict[str, Target]) -> dict[str, Target]:
        return {path: target for path, target in found.items() if self.owns(path)}

    def start(self) -> dict[str, Target]:
        for entry in self.entries:
            self._watch_tree(entry)
        self.known = self._owned(scan(self.entries))
        return dict(self.known)

    def rescan(self) -> Changes:
        watched = {folder for folder, _ in self._folders.values()}
        for entry in self.entries:
            if isinstance(entry, DatabaseDir) and entry.recursive:
                for folder, _ in _folders_under(entry.dir):
                    if folder not in watched:
                        self._watch(folder, entry)
        now = self._owned(scan(self.entries))
        added = tuple(target for path, target in now.items() if path not in self.known)
        removed = tuple(path for path in self.known if path not in now)
        self.known = now
        return Changes(added, removed)

    def _target(self, entry: DatabaseEntry, path: str) -> Target | None:
        if isinstance(entry, DatabaseFile):
            if path != entry.path:
                return None
            target = Target(path, entry.replica, entry.interval)
        else:
            if not matches(entry, os.path.basename(path)):
                return None
            target = Target(path, replica_for(entry, path), entry.interval)
        if not self.owns(path) or not is_sqlite_database(path) or os.path.realpath(path) != path:
            return None
        return target

    def read(self) -> Changes:
        added: list[Target] = []
        removed: list[str] = []
        changed: set[str] = set()
        rescan = False
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                rescan = True
                continue
            where = self._folders.get(event.wd)
            if where is None:
                continue
            if event.mask & flags.IGNORED:
                del self._folders[event.wd]
                continue
            folder, entry = where
            path = os.path.join(folder, event.name)
            if event.mask & flags.ISDIR:
                if event.mask & (flags.CREATE | flags.MOVED_TO) and isinstance(entry, DatabaseDir) and entry.recursive:
                    self._watch_tree(DatabaseDir(path, entry.replica_root, entry.pattern, True, entry.interval))
                    rescan = True
                continue
            database = path
            for suffix in SIDE_FILE_SUFFIXES:
                if path.endswith(suffix):
                    database = path[: -len(suffix)]
            if database in self.known:
                if event.mask & (flags.DELETE | flags.MOVED_FROM) and database == path and not os.path.lexists(path):
                    del self.known[database]
                    removed.append(database)
                elif event.mask & _WRITTEN:
                    changed.add(database)
            elif database == path and event.mask & (flags.CREATE | flags.MOVED_TO | flags.MODIFY | flags.CLOSE_WRITE):
                target = self._target(entry, path)
                if target is not None:
                    self.known[path] = target
                    added.append(target)
        changes = Changes(tuple(added), tuple(removed), frozenset(changed))
        if rescan:
            more = self.rescan()
            changes = Changes(changes.added + more.added, changes.removed + more.removed, changes.changed)
        return changes

    def close(self) -> None:
        self._inotify.close()

    def __enter__(self) -> DatabaseWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _folders_under(top: str) -> list[tuple[str, None]]:
    found: list[tuple[str, None]] = []
    pending = [top]
    while pending:
        folder = pending.pop()
        found.append((folder, None))
        try:
            with os.scandir(folder) as items:
                pending.extend(item.path for item in items if item.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return found
