"""One replica directory: everything ltxpool does to the files of one replica.

Modules, one job each: ``layout`` (Litestream's file-replica layout, listing),
``atomic`` (the #670-safe atomic writer), ``plan`` (which files to compact or
restore), ``merge`` (newest-wins merge of a chain of LTX files), ``compactor``,
``retention``, ``quarantine``, ``janitor`` (one janitor round), ``restore``,
``chain_check`` (does a TXID restore? from headers and page indexes), and
``status`` (the status model behind ``ltxpool status`` and the gauges).

Layer: imports ``ltxpool.locks`` and ``ltxpool.ltx`` only.
"""

from __future__ import annotations

from ltxpool.replica.atomic import (
    AtomicWriter,
    fsync_directory,
    is_ltxpool_temp,
    temp_name_for,
    write_atomic,
)
from ltxpool.replica.chain_check import ChainProblem, check_replica
from ltxpool.replica.compactor import (
    SCHEDULED_LEVELS,
    CompactionResult,
    CompactionSettings,
    compact_level,
    compaction_pass,
    next_due,
)
from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.janitor import (
    DEFAULT_FOREIGN_TEMP_AGE,
    JanitorReport,
    JanitorSettings,
    janitor_pass,
    sweep_temp_files,
)
from ltxpool.replica.layout import (
    COMPACTION_LEVELS,
    LEVELS,
    SNAPSHOT_LEVEL,
    Listing,
    LtxFile,
    Replica,
)
from ltxpool.replica.merge import merge_frames, merged_header
from ltxpool.replica.plan import (
    coverage_gaps,
    latest_snapshot,
    level_problems,
    plan_compaction,
    plan_restore,
)
from ltxpool.replica.quarantine import quarantined_files
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy, plan_retention
from ltxpool.replica.status import (
    ReplicaStatus,
    StatusCollector,
    format_table,
    guarded_status,
    replica_status,
    status_document,
    status_metrics,
)

__all__ = [
    "ChainProblem",
    "check_replica",
    "COMPACTION_LEVELS",
    "DEFAULT_FOREIGN_TEMP_AGE",
    "LEVELS",
    "SCHEDULED_LEVELS",
    "SNAPSHOT_LEVEL",
    "AtomicWriter",
    "CompactionResult",
    "CompactionSettings",
    "JanitorReport",
    "JanitorSettings",
    "Listing",
    "LtxFile",
    "Replica",
    "ReplicaStatus",
    "RestorePlanError",
    "RetentionPolicy",
    "StatusCollector",
    "compact_level",
    "compaction_pass",
    "coverage_gaps",
    "format_table",
    "guarded_status",
    "fsync_directory",
    "is_ltxpool_temp",
    "janitor_pass",
    "level_problems",
    "merge_frames",
    "merged_header",
    "next_due",
    "latest_snapshot",
    "plan_compaction",
    "plan_restore",
    "plan_retention",
    "quarantined_files",
    "replica_status",
    "restore",
    "status_document",
    "status_metrics",
    "sweep_temp_files",
    "temp_name_for",
    "write_atomic",
]
