"""What the operator asks to replicate: ``[[databases]]`` entries, and the replica each database gets.

Two kinds of entry, as in Litestream's config:

* :class:`DatabaseFile` -- one database, one replica (``path`` + ``replica``);
* :class:`DatabaseDir` -- every database under ``dir`` whose name matches
  ``pattern`` (in sub-folders too when ``recursive``), each with its own replica at
  ``<replica_root>/<path relative to dir>/``: ``/srv/tenants/a/b.db`` ->
  ``/srv/ltx/tenants/a/b.db/``, the mapping Litestream's ``dir:`` uses, so one
  tool's replica tree is the other's.

A :class:`Target` is one database the pool replicates, found by discovery
(``ltxpool.discovery.scan``): the database, its replica, its step interval.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DatabaseFile", "DatabaseDir", "DatabaseEntry", "Target", "DEFAULT_INTERVAL", "DEFAULT_PATTERN",
           "SIDE_FILE_SUFFIXES", "replica_for", "owner_of",
           "database_folders"]

#: Seconds between two replication steps of one database that keeps changing.
DEFAULT_INTERVAL = 1.0
DEFAULT_PATTERN = "*.db"
#: SQLite's own files next to a database: never databases themselves, whatever the pattern says.
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class DatabaseFile:
    """``[[databases]] path = ... replica = ...``: one database, one replica (absolute paths)."""

    path: str
    replica: str
    interval: float = DEFAULT_INTERVAL


@dataclass(frozen=True)
class DatabaseDir:
    """``[[databases]] dir = ... pattern = ... recursive = ... replica_root = ...`` (absolute paths)."""

    dir: str
    replica_root: str
    pattern: str = DEFAULT_PATTERN
    recursive: bool = False
    interval: float = DEFAULT_INTERVAL


DatabaseEntry = DatabaseFile | DatabaseDir


@dataclass(frozen=True, order=True)
class Target:
    """One database the pool replicates, and where to."""

    database: str
    replica: str
    interval: float = DEFAULT_INTERVAL


def replica_for(entry: DatabaseDir, database: str) -> str:
    """The replica of ``database`` (a path under ``entry.dir``): same relative path under ``replica_root``."""
    relative = os.path.relpath(database, entry.dir)
    if relative.startswith(os.pardir + os.sep) or relative == os.pardir or os.path.isabs(relative):
        raise ValueError(f"{database} is not under {entry.dir}")
    return os.path.join(entry.replica_root, relative)


def owner_of(database: str, workers: int) -> int:
    """The index of the worker that replicates ``database``: stable across restarts and processes,
    so a restarted worker takes over exactly what its predecessor had."""
    return zlib.crc32(os.fsencode(database)) % workers


def database_folders(entries: Sequence[DatabaseEntry]) -> list[str]:
    """Every folder the entries read databases from or write replicas to (for the filesystem check)."""
    folders: list[str] = []
    for entry in entries:
        if isinstance(entry, DatabaseFile):
            folders += [os.path.dirname(entry.path), os.path.dirname(entry.replica)]
        else:
            folders += [entry.dir, entry.replica_root]
    return folders
