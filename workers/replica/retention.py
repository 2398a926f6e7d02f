"""Retention: which LTX files may go, without ever removing the only copy of a range.

Decided top-down, so that coverage is always judged against files that stay:

* level 9: a snapshot older than ``snapshot_retention`` goes, never the newest (the
  newest snapshot ``[1, M]`` covers every older one).
* levels 3, 2, 1, 0: a file goes when its whole TXID range is covered by files that
  stay at higher levels (snapshots included) and have existed for at least that
  level's retention (level 0: "kept a few minutes after level 1 covers it"). The
  newest file of every level always stays: compaction plans start after it.
* the files of the current restore chain to the latest TXID always stay. Coverage by
  a union of ranges is not enough on its own: with a snapshot ``[1, 10]`` and a
  level-3 file ``[5, 15]``, deleting ``[1, 4]`` and ``[11, 15]`` leaves every range
  covered and TXID 15 unreachable.

A file that no other file covers is never deleted, whatever its age.

``retention_due`` says when the plan can next change for the same files: the plan
depends on time only through age thresholds, so between two of them it stays what it
is now. The janitor leaves an unchanged replica alone until then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.layout import COMPACTION_LEVELS, SNAPSHOT_LEVEL, Listing, LtxFile
from ltxpool.replica.plan import plan_restore

__all__ = ["RetentionPolicy", "plan_retention", "retention_due", "covered"]


@dataclass(frozen=True)
class RetentionPolicy:
    """Seconds a file must have been covered before it goes, per level; snapshots by age."""

    level_retention: Mapping[int, float] = field(
        default_factory=lambda: {0: 300.0, 1: 86400.0, 2: 86400.0, 3: 86400.0}
    )
    snapshot_retention: float = 86400.0


def _merge_intervals(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def covered(f: LtxFile, intervals: list[tuple[int, int]]) -> bool:
    """Whether the merged ``intervals`` contain f's whole TXID range."""
    return any(low <= f.min_txid and f.max_txid <= high for low, high in intervals)


def plan_retention(listings: Mapping[int, Listing], policy: RetentionPolicy, now: float) -> list[LtxFile]:
    """The files retention removes now, highest level first."""
    try:
        chain = {f.path for f in plan_restore(listings).inputs}
    except RestorePlanError:
        chain = set()
    doomed: list[LtxFile] = []
    kept: list[LtxFile] = []
    snapshots = listings[SNAPSHOT_LEVEL].files
    newest_snapshot = max(snapshots, key=lambda f: f.max_txid, default=None)
    for snapshot in snapshots:
        if snapshot is newest_snapshot or snapshot.path in chain:
            kept.append(snapshot)
        elif now - snapshot.mtime > policy.snapshot_retention:
            doomed.append(snapshot)
        else:
            kept.append(snapshot)
    for level in reversed((0, *COMPACTION_LEVELS)):
        files = listings[level].files
        newest = max(files, key=lambda f: f.max_txid, default=None)
        age = policy.level_retention[level]
        intervals = _merge_intervals([(f.min_txid, f.max_txid) for f in kept if now - f.mtime >= age])
        for f in files:
            if f is not newest and f.path not in chain and covered(f, intervals):
                doomed.append(f)
            else:
                kept.append(f)
    return doomed


def retention_due(listings: Mapping[int, Listing], policy: RetentionPolicy, now: float) -> float:
    """The earliest time from ``now`` at which ``plan_retention`` of these same listings may differ; inf if never.

    The plan reads the clock only in two tests: a snapshot older than
    ``snapshot_retention``, and a file at a higher level (snapshots included) at least
    ``level_retention[l]`` old, which may then cover files at level ``l``. Each test
    flips once, at ``mtime + age``; the earliest one not flipped yet bounds the
    present plan. Checked with the plan's own comparisons, so rounding can only bring
    the time forward, never skip it.
    """
    due = math.inf
    snapshots = listings[SNAPSHOT_LEVEL].files
    for snapshot in snapshots:
        if not now - snapshot.mtime > policy.snapshot_retention:
            due = min(due, snapshot.mtime + policy.snapshot_retention)
    higher = list(snapshots)
    for level in reversed((0, *COMPACTION_LEVELS)):
        age = policy.level_retention[level]
        for f in higher:
            if not now - f.mtime >= age:
                due = min(due, f.mtime + age)
        higher.extend(listings[level].files)
    return due
