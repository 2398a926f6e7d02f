"""Every error raised while replicating a live SQLite database, in one place.

Root: :class:`ltxpool.errors.LtxpoolError` (path, step, errno, reason; pickles).
"""

from __future__ import annotations

from ltxpool.errors import LtxpoolError

__all__ = [
    "StepAbandoned",
    "DatabaseBusyError",
    "DatabaseMismatchError",
    "IncompleteStepError",
    "ReplicaBusyError",
    "SourceDiffersError",
    "SourceError",
    "StateStoreError",
    "WalFormatError",
]


class SourceError(LtxpoolError):
    """The database cannot be read: missing, not SQLite, unreadable, or inconsistent."""


class DatabaseBusyError(SourceError):
    """SQLite's lock stayed busy past the timeout; the next step tries again."""


class WalFormatError(ValueError):
    """The WAL or wal-index does not look like SQLite's; the caller names the file."""


class DatabaseMismatchError(LtxpoolError):
    """The replica's saved state belongs to another database file."""


class IncompleteStepError(LtxpoolError):
    """A step would write a TXID whose restore lacks pages; nothing was written."""


class StateStoreError(LtxpoolError):
    """Replicate's state directory (``.ltxpool-replicate``) could not be created, read or written."""


class ReplicaBusyError(LtxpoolError):
    """Another replicate process is appending to this replica."""


class SourceDiffersError(LtxpoolError):
    """A restored database is not page for page the source database (``restore --compare``)."""


class StepAbandoned(Exception):
    """Raised by a stopping replicate's deadline inside a step that outlasts it (a wait for a
    lock or for SQLite): whatever the step had not made durable is left as a crash would
    leave it, which every start repairs (``ltxpool.replicate.reconcile``). Not a path error:
    it names no file, only that the stop would not wait longer."""
