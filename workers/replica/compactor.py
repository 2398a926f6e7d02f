"""Compaction of one replica: level 0 -> 1 -> 2 -> 3, and level-9 snapshots.

A level is *due* when its newest file is older than the level's interval
(Litestream's defaults: 30 s, 5 min, 1 h; snapshots every 24 h) and there is
something to merge. Each compaction of a level runs under that level's non-blocking
claim, so two workers never compact the same level at once (a claimed level is
simply skipped), and the output is written through the atomic writer under the
level directory's lock, so the janitor can never remove its temp file (#670).

A level-9 snapshot is the merge of the latest restore chain: the newest snapshot
(if any) and every file after it, streamed page by page (``merge_files``), so its
memory does not grow with the database. Litestream takes its snapshots from the live
database instead; both give a file starting at TXID 1 that holds every page. Levels
1-3 hold only what follows the latest snapshot (``plan_compaction``): the base is
written once per snapshot, at level 9, never copied up the ladder (Litestream #1510).
A replica in the layout before #14 (snapshot at level 0, level 1-3 files from TXID 1)
converges as it is compacted: the next level-9 snapshot becomes the base, later level
1-3 files start after it, and retention removes the old copies it covers.

As Litestream does, an output file's mtime is set to its header timestamp: Litestream's
retention reads file times, and a replica may be shared with it.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError
from ltxpool.locks.dirlock import DEFAULT_TIMEOUT
from ltxpool.replica.atomic import AtomicWriter
from ltxpool.replica.chain_check import checked_inputs
from ltxpool.replica.directory import claim_in, dir_lock
from ltxpool.replica.layout import COMPACTION_LEVELS, SNAPSHOT_LEVEL, Listing, LtxFile, Replica
from ltxpool.replica.merge import merge_files
from ltxpool.replica.plan import Plan, plan_compaction, plan_restore

__all__ = ["CompactionSettings", "CompactionResult", "compact_level", "compaction_pass", "next_due", "plan_for"]

log = logging.getLogger("ltxpool.compactor")

SCHEDULED_LEVELS = (*COMPACTION_LEVELS, SNAPSHOT_LEVEL)


@dataclass(frozen=True)
class CompactionSettings:
    """Seconds between compactions of each level, and between snapshots."""

    intervals: Mapping[int, float] = field(default_factory=lambda: {1: 30.0, 2: 300.0, 3: 3600.0})
    snapshot_interval: float = 86400.0

    def interval(self, level: int) -> float:
        return self.snapshot_interval if level == SNAPSHOT_LEVEL else self.intervals[level]


@dataclass(frozen=True)
class CompactionResult:
    replica: str
    level: int
    inputs: int
    min_txid: int
    max_txid: int
    bytes_written: int
    seconds: float


def plan_for(listings: Mapping[int, Listing], level: int, *, after_snapshot: bool = True) -> Plan:
    """What compacting ``level`` would merge now (an empty plan: nothing to do).

    ``after_snapshot=False``: the level 1-3 planner before #14, for tests and benchmarks
    (see :func:`~ltxpool.replica.plan.plan_compaction`).
    """
    if level != SNAPSHOT_LEVEL:
        return plan_compaction(listings, level, after_snapshot=after_snapshot)
    if not any(listing.files for listing in listings.values()):
        return Plan()
    plan = plan_restore(listings)
    if [f.level for f in plan.inputs] == [SNAPSHOT_LEVEL]:
        return Plan(problems=plan.problems)
    return plan


def _last_compaction(listings: Mapping[int, Listing], level: int) -> float:
    return max((f.mtime for f in listings[level].files), default=-math.inf)


def output_access(inputs: Sequence[LtxFile]) -> tuple[int, tuple[int, int] | None]:
    """The mode and owner a merge of ``inputs`` takes: no wider than any input, the newest's owner.

    A compaction never makes a replica more readable than replicate made it (which
    follows the source database's mode).
    """
    mode = 0o666
    for f in inputs:
        mode &= f.mode
    return mode, inputs[-1].owner


def compact_level(replica: Replica, level: int, *, pool: int | None = None,
                  lock_timeout: float = DEFAULT_TIMEOUT, after_snapshot: bool = True) -> CompactionResult | None:
    """Compact ``level`` now if this process can claim it and there is work; else None.

    The level directory is opened once; the claim, the lock and the write all go
    through that descriptor, so a swap of its path during a wait changes nothing.
    ``pool``: the supervisor whose workers may hold the claim (then: None, taken);
    any other holder raises ``ClaimHeld`` naming it. ``lock_timeout``: the longest
    the write waits for the directory lock (then ``LockTimeout`` naming the holder).
    ``after_snapshot=False`` is for tests and benchmarks only (the planner before #14).
    """
    directory = replica.level_directory(level, create=True, parents=False)
    if directory is None:
        return None
    with directory, claim_in(directory, pool=pool) as claim, claim.held() as mine:
        if not mine:
            return None
        plan = checked_inputs(plan_for(replica.list_all(), level, after_snapshot=after_snapshot))
        for problem in plan.problems:
            log.warning("%s: level %d: %s", escape(replica.root), level, escape(problem))
        if not plan.inputs:
            return None
        started = time.monotonic()
        path = replica.path_of(level, plan.min_txid, plan.max_txid)
        mode, owner = output_access(plan.inputs)
        try:
            with dir_lock(directory, timeout=lock_timeout) as lock, AtomicWriter(
                path, lock, directory=directory, mode=mode, owner=owner
            ) as writer:
                result = merge_files(plan.inputs, writer)
                writer.set_times(result.header.timestamp / 1000)
                writer.commit()
        except LtxpoolError as exc:
            if exc.step != "open" or exc.errno != errno.ENOENT:
                raise
            # Retention (or an operator) removed an input after we planned: the next
            # round plans again from what is there.
            log.info("%s: level %d: input %s vanished; will re-plan", escape(replica.root), level, escape(exc.path))
            return None
    compaction = CompactionResult(
        replica.root, level, len(plan.inputs), plan.min_txid, plan.max_txid,
        writer.bytes_written, time.monotonic() - started,
    )
    log.info(
        "%s: compacted %d files into level %d: TXID %d-%d, %d bytes in %.3f s",
        escape(replica.root), compaction.inputs, level, compaction.min_txid, compaction.max_txid,
        compaction.bytes_written, compaction.seconds,
    )
    return compaction


def _due(listings: Mapping[int, Listing], level: int, settings: CompactionSettings, now: float) -> bool:
    # The same sum next_due returns: "now - last >= interval" can round the other way
    # for epoch-sized times, and a pass started exactly on time would find nothing due.
    return now >= _last_compaction(listings, level) + settings.interval(level)


def compaction_pass(replica: Replica, settings: CompactionSettings, now: float, *, pool: int | None = None,
                    lock_timeout: float = DEFAULT_TIMEOUT) -> list[CompactionResult]:
    """Compact every level of ``replica`` that is due, lowest first (one level feeds the next)."""
    results = []
    for level in SCHEDULED_LEVELS:
        listings = replica.list_all()
        if _due(listings, level, settings, now) and plan_for(listings, level).inputs:
            result = compact_level(replica, level, pool=pool, lock_timeout=lock_timeout)
            if result is not None:
                results.append(result)
    return results


def next_due(replica: Replica, settings: CompactionSettings, now: float) -> float:
    """The earliest wall time at which a level with pending work becomes due (inf: none pending)."""
    listings = replica.list_all()
    times = [
        max(now, _last_compaction(listings, level) + settings.interval(level))
        for level in SCHEDULED_LEVELS
        if plan_for(listings, level).inputs
    ]
    return min(times, default=math.inf)
