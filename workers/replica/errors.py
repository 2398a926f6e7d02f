"""Every error raised on one replica directory, in one place.

Root: :class:`ltxpool.errors.LtxpoolError` (path, step, errno, reason; pickles).
"""

from __future__ import annotations

from ltxpool.errors import LtxpoolError

__all__ = [
    "AtomicWriteError",
    "BrokenChainError",
    "DirectoryError",
    "IntegrityCheckError",
    "JanitorError",
    "LevelDirectoryError",
    "OutputExistsError",
    "QuarantineError",
    "RestorePlanError",
    "TxidRecordError",
    "UnsafeRootError",
]


class AtomicWriteError(LtxpoolError):
    """A step of the atomic writer failed; the temp file is gone and the final name untouched."""


class DirectoryError(LtxpoolError):
    """A directory inside a replica could not be opened (a symlink is refused), created or used."""


class LevelDirectoryError(DirectoryError):
    """A level directory could not be created, opened (a symlink is refused) or listed."""


class JanitorError(LtxpoolError):
    """The janitor could not list a directory or remove a temp file or an expired file."""


class QuarantineError(LtxpoolError):
    """A corrupt file could not be moved to ``<replica>/quarantine/``."""


class RestorePlanError(LtxpoolError):
    """No chain of files reaches the requested TXID."""


class BrokenChainError(LtxpoolError):
    """A restore chain lacks pages, mixes page sizes or does not follow on (``chain_check``)."""


class OutputExistsError(LtxpoolError):
    """Restore writes a new file only; the output name is taken."""


class IntegrityCheckError(LtxpoolError):
    """The restored database failed SQLite's ``PRAGMA integrity_check``."""



class UnsafeRootError(LtxpoolError):
    """A replica root is refused at start: a system folder, writable by others, owned by someone unexpected."""


class TxidRecordError(LtxpoolError):
    """The per-TXID checksum record (``.ltxpool-replicate/txids``) could not be opened, read or written."""
