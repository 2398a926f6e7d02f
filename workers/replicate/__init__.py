"""Replicate: a live SQLite database -> level-0 LTX files, consistent and complete.

Modules: ``sqlite_source`` (a consistent image through SQLite's own locks),
``sqlite_wal`` (the WAL file format), ``state`` (the replicator's durable position),
``reconcile`` (start-up: the state checked against the replica), ``replicator``
(one step: changed pages -> one LTX file), ``loop`` (the continuous loop and its
manners towards the app), ``compare`` (a restored database against the live
source, page for page).

Layer: imports ``ltxpool.locks``, ``ltxpool.ltx`` and ``ltxpool.replica`` only.
"""

from __future__ import annotations

from ltxpool.replicate.compare import compare_with_source
from ltxpool.replicate.errors import (
    DatabaseBusyError,
    DatabaseMismatchError,
    IncompleteStepError,
    ReplicaBusyError,
    SourceError,
)
from ltxpool.replicate.loop import LoopEvent, replicate_continuously
from ltxpool.replicate.replicator import Replicator, StepResult
from ltxpool.replicate.sqlite_source import RollbackPosition, SqliteSource, WalPosition
from ltxpool.replicate.state import STATE_DIR

__all__ = [
    "STATE_DIR",
    "DatabaseBusyError",
    "DatabaseMismatchError",
    "IncompleteStepError",
    "LoopEvent",
    "ReplicaBusyError",
    "SourceError",
    "Replicator",
    "RollbackPosition",
    "SqliteSource",
    "StepResult",
    "WalPosition",
    "compare_with_source",
    "replicate_continuously",
]
