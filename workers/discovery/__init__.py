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
    replica_for,
)
from ltxpool.discovery.scan import is_sqlite_database, scan

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_PATTERN",
    "SIDE_FILE_SUFFIXES",
    "DatabaseDir",
    "DatabaseEntry",
    "DatabaseFile",
    "Target",
    "database_folders",
    "is_sqlite_database",
    "owner_of",
    "replica_for",
    "scan",
]
