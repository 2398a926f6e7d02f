"""Discovery: which databases the pool replicates -- the ``[[databases]]`` entries, and what they match now.

Layer between ``replicate`` and ``pool``: it knows paths, SQLite's file header and
the kernel's change notification, never LTX.
"""

from ltxpool.discovery.entries import (
    DEFAULT_INTERVAL,
    DEFAULT_PATTERN,
    SIDE_FILE_SUFFIXES,
    DatabaseDir,
    DatabaseEntry,
    DatabaseFile,
    Target,
    database_folders,
    owner_of,
    remote_for,
    replica_for,
)
from ltxpool.discovery.errors import DiscoveryError
from ltxpool.discovery.limits import check_watch_limit, needed_watches
from ltxpool.discovery.scan import is_sqlite_database, scan
from ltxpool.discovery.watch import WATCH_MASK, Changes, DatabaseWatch

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_PATTERN",
    "SIDE_FILE_SUFFIXES",
    "WATCH_MASK",
    "Changes",
    "DatabaseDir",
    "DatabaseEntry",
    "DatabaseFile",
    "DatabaseWatch",
    "DiscoveryError",
    "Target",
    "database_folders",
    "check_watch_limit",
    "is_sqlite_database",
    "needed_watches",
    "owner_of",
    "remote_for",
    "replica_for",
    "scan",
]
