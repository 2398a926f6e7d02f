"""What the operator asks to replicate: ``[[databases]]`` entries, and the replica each database gets.

Two kinds of entry, as in Litestream's config:

* :class:`DatabaseFile` -- one database, one replica (``path`` + ``replica``);
* :class:`DatabaseDir` -- every database under ``dir`` whose name matches
  ``pattern`` (in sub-folders too when ``recursive``), each with its own replica at
  ``<replica_root>/<path relative to dir>/``: ``/srv/tenants/a/b.db`` ->
  ``/srv/ltx/tenants/a/b.db/``, the mapping Litestream's ``dir:`` uses, so one
  tool's replica tree is the other's.

A :class:`Target` is one database the pool replicates, found by discovery
(``ltxpool.discovery.scan``): the database, its replica, its step interval, and its
off-host copy if the entry has a ``[databases.remote]`` table (#16): for a ``path``
entry the table's own prefix, for a ``dir`` entry ``<prefix>/<path relative to dir>``
(``remote_for``), the mapping of the local replicas, so each database gets a prefix
of its own and one bucket holds the whole tree as ``replica_root`` does.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ltxpool.remote import RemoteTarget

__all__ = ["DatabaseFile", "DatabaseDir", "DatabaseEntry", "Target", "DEFAULT_INTERVAL", "DEFAULT_PATTERN",
           "SIDE_FILE_SUFFIXES", "replica_for", "remote_for", "owner_of",
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
    #: ``[databases.remote]``: the bucket and prefix its replica is shipped to (None: none).
    remote: RemoteTarget | None = None


@dataclass(frozen=True)
class DatabaseDir:
    """``[[databases]] dir = ... pattern = ... recursive = ... replica_root = ...`` (absolute paths)."""

    dir: str
    replica_root: str
    pattern: str = DEFAULT_PATTERN
    recursive: bool = False
    interval: float = DEFAULT_INTERVAL
    #: ``[databases.remote]``: each database's replica goes to ``<prefix>/<path relative to dir>``.
    remote: RemoteTarget | None = None


DatabaseEntry = DatabaseFile | DatabaseDir


@dataclass(frozen=True, order=True)
class Target:
    """One database the pool replicates, and where to."""

    database: str
    replica: str
    interval: float = DEFAULT_INTERVAL
    # Not compared: two targets of one database and replica are one target (ordering stays total).
    remote: RemoteTarget | None = field(default=None, compare=False)


def _relative(entry: DatabaseDir, database: str) -> str:
    """``database`` relative to ``entry.dir``; a path outside it is a ``ValueError``.

    Asked for every database each janitor round and each rescan: a path already of the
    form ``<dir>/<normal relative path>`` (what the walks build) is sliced, which costs a
    fraction of ``os.path.relpath``; any other goes through ``relpath``.
    """
    prefix = entry.dir if entry.dir.endswith(os.sep) else entry.dir + os.sep
    if database.startswith(prefix):
        relative = database[len(prefix):]
        if (relative and not relative.startswith(os.sep) and os.path.normpath(relative) == relative
                and os.pardir not in relative.split(os.sep)):
            return relative
    relative = os.path.relpath(database, entry.dir)
    if relative.startswith(os.pardir + os.sep) or relative == os.pardir or os.path.isabs(relative):
        raise ValueError(f"{database} is not under {entry.dir}")
    return relative


def replica_for(entry: DatabaseDir, database: str) -> str:
    """The replica of ``database`` (a path under ``entry.dir``): same relative path under ``replica_root``."""
    return os.path.join(entry.replica_root, _relative(entry, database))


def remote_for(entry: DatabaseEntry, database: str) -> RemoteTarget | None:
    """The off-host copy of ``database`` of ``entry``: a ``dir`` entry's databases each get
    ``<prefix>/<path relative to dir>`` (``/srv/tenants/a/b.db`` -> ``s3://bucket/prefix/a/b.db``)."""
    if entry.remote is None or isinstance(entry, DatabaseFile):
        return entry.remote
    relative = _relative(entry, database).replace(os.sep, "/")
    return dataclasses.replace(entry.remote, prefix=f"{entry.remote.prefix}/{relative}")


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
