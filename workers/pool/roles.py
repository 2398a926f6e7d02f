"""The whole life of each kind of child: one module-level function per role.

``worker_main``: a compaction worker. It keeps its own schedule of every replica
(``ltxpool.pool.schedule``), sleeps until the first is due, runs ``compaction_pass`` on
it and plans the next. There is no central queue: N workers look at the same
replicas, starting at different offsets, and the per-level claims keep two of them
off one level (a claimed level is skipped, not waited for).

``janitor_main``: the one janitor. Every ``janitor_interval`` it runs
``janitor_pass`` on each replica in turn (orphaned temp files, quarantine of
corrupt files, retention) and reports what it did -- each replica that changed, that
is: one its last pass left clean, unchanged since, costs an ``lstat`` per level
directory and no lock (``ltxpool.replica.janitor_memory``), so a round's cost follows
what changed, not how many replicas there are (issue 15).

Both announce each item before they start it (``busy``), which starts the
supervisor's hang deadline, and report every result and every failure. A failure
of one replica (an ltxpool error or an OSError) is logged, reported and retried
later; the child goes on with the other replicas. Anything else is a bug and
crashes the child, which the supervisor restarts -- charged to the replica named in
``busy``, so that replica is held off (``held_off``: seconds left of each hold, handed
down at fork) and never makes a pool-wide crash loop.

Every wait has a deadline: a worker waits for a directory lock at most
``config.lock_timeout`` (keep it under ``hang_timeout``, so the worker names the
holder before the supervisor would kill it as hung), and a claim held by anyone but
a sibling worker is an error naming the holder (``ClaimHeld``), logged and backed
off like any failure of that replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ltxpool.display import escape, one_line
from ltxpool.errors import LtxpoolError
from ltxpool.pool.child import ChildLink
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.events import (
    Compacted,
    CompactionFailed,
    DatabasesKnown,
    JanitorFailed,
    JanitorReported,
    JanitorRound,
    Replicated,
    ReplicationFailed,
)
from ltxpool.pool.replicas import looked_after
from ltxpool.pool.replication import QueuedDatabase
from ltxpool.pool.schedule import ReplicaSchedule
from ltxpool.pool.share import DatabaseShare
from ltxpool.replica.compactor import compaction_pass
from ltxpool.replica.janitor import JanitorReport, janitor_pass
from ltxpool.replica.janitor_memory import JanitorMemory
from ltxpool.replica.layout import Replica
from ltxpool.replica.problem_summary import SkipLog
from ltxpool.replica.shipped import read_shipped

__all__ = ["worker_main", "janitor_main"]

log = logging.getLogger("ltxpool.pool")


def worker_main(link: ChildLink, index: int, config: PoolConfig, held_off: Mapping[str, float]) -> None:
    """Replicate this worker's share of the databases and compact due levels until asked to stop (SIGTERM)."""
    replicas = [Replica(root) for root in config.replicas]
    schedule = ReplicaSchedule(
        replicas, config.compaction, offset=index * len(replicas) // config.workers,
        poll_interval=config.poll_interval,
    )
    now = time.time()
    for position, replica in enumerate(replicas):
        if replica.root in held_off:
            schedule.hold_off(position, now + held_off[replica.root])
    share = DatabaseShare(config, index) if config.databases else None
    positions: dict[str, int] = {}
    try:
        if share is not None:
            for target in share.start(now, held_off):
                _join(schedule, positions, target.replica, now, held_off)
            _announce(link, share, index)
        _work(link, config, schedule, share, positions, held_off)
    finally:
        if share is not None:
            share.close()


def _join(schedule: ReplicaSchedule, positions: dict[str, int], root: str, now: float,
          held_off: Mapping[str, float]) -> None:
    """A database's replica joins this worker's compaction schedule (not polled: we write its level 0)."""
    if root in positions:
        return
    positions[root] = schedule.add(Replica(root), now)
    if root in held_off:
        schedule.hold_off(positions[root], now + held_off[root])


def _announce(link: ChildLink, share: DatabaseShare, index: int) -> None:
    link.send(DatabasesKnown(index, len(share.queue), share.retired, share.watch.watches))


def _work(link: ChildLink, config: PoolConfig, schedule: ReplicaSchedule, share: DatabaseShare | None,
          positions: dict[str, int], held_off: Mapping[str, float]) -> None:
    """The loop: a due database's step first (replication lag is what apps feel), then due compactions."""
    replicas = schedule.replicas
    while not link.stopping:
        now = time.time()
        if share is not None:
            found, retired = share.absorb(now)
            for target in found:
                _join(schedule, positions, target.replica, now, held_off)
            for target in retired:
                if target.replica in positions:
                    schedule.retire(positions.pop(target.replica))
            if found or retired:
                _announce(link, share, share.index)
            entry = share.pop_due(now)
            if entry is not None:
                _replicate(link, share, entry, schedule, positions)
                continue
        schedule.maintain(now)
        due = schedule.pop_due(now)
        if due is None:
            wake = schedule.wake_at() if share is None else min(schedule.wake_at(), share.wake_at())
            link.sleep(wake - now, () if share is None else share.wake_on())
            continue
        position, due_at = due
        replica = replicas[position]
        lag = max(now - due_at, 0.0)
        log.debug("%s: compaction pass, %.3f s after it was due", escape(replica.root), lag)
        link.busy(f"compacting {replica.root}", lag, replica.root)
        try:
            results = compaction_pass(replica, config.compaction, now, pool=link.parent,
                                      lock_timeout=config.lock_timeout)
        except (LtxpoolError, OSError) as exc:
            delay = schedule.failed(position, time.time())
            log.error("%s: compaction failed: %s (retry in %.0f s)", escape(replica.root), one_line(str(exc)), delay)
            link.send(CompactionFailed(replica.root, exc))
            continue
        for result in results:
            link.send(Compacted(result))
        schedule.finished(position, time.time(), progressed=bool(results))


def _replicate(link: ChildLink, share: DatabaseShare, entry: QueuedDatabase, schedule: ReplicaSchedule,
               positions: dict[str, int]) -> None:
    """Step one due database; a file written re-plans its replica's compaction."""
    target = entry.target
    link.busy(f"replicating {target.database}", 0.0, target.replica)
    outcome = share.step(entry)
    if outcome.error is not None:
        link.send(ReplicationFailed(target.database, outcome.error))
        return
    result = outcome.result
    if result is None:
        return
    log.log(logging.INFO if result.snapshot else logging.DEBUG, "%s: txid %d: %d pages, %d bytes%s (%.3f s after "
            "the change was seen)", escape(target.database), result.txid, result.pages, result.bytes,
            " (snapshot)" if result.snapshot else "", outcome.lag)
    link.send(Replicated(target.database, target.replica, result.txid, result.bytes, result.snapshot, outcome.lag))
    position = positions.get(target.replica)
    if position is not None:
        schedule.touch(position, time.time())


def _log_report(report: JanitorReport, known_problems: set[str], skips: SkipLog) -> None:
    """One line when the round changed something; each problem once, when first seen;
    skipped names summarised per directory and rate-limited by ``skips``."""
    root = escape(report.replica)
    if report.orphans_removed or report.retention_removed or report.quarantined or report.busy_dirs:
        log.info("%s: janitor removed %d orphaned temp files and %d files past retention, quarantined %d, "
                 "skipped %d busy directories", root, report.orphans_removed, report.retention_removed,
                 report.quarantined, report.busy_dirs)
    for line in skips.due(report.skipped):
        log.warning("%s: %s", root, line)
    for problem in report.problems:
        if problem not in known_problems:
            log.warning("%s: %s", root, one_line(problem))
    known_problems.clear()
    known_problems.update(report.problems)


class _Verified:
    """The files ``janitor_pass`` has verified, per replica, kept no bigger than needed.

    ``janitor_pass`` only ever adds to the set; over months every level-0 file that
    ever arrived would stay in it. Once a set has doubled since it was last pruned,
    entries whose file is gone are dropped (one listing, paid rarely).
    """

    def __init__(self) -> None:
        self.sets: dict[str, set[tuple[str, int, float]]] = {}
        self._pruned_at: dict[str, int] = {}

    def of(self, replica: Replica) -> set[tuple[str, int, float]]:
        return self.sets.setdefault(replica.root, set())

    def keep_only(self, roots: list[str]) -> None:
        """Drop the sets of replicas no longer looked after (a replica that returns is verified again)."""
        wanted = set(roots)
        for root in [root for root in self.sets if root not in wanted]:
            del self.sets[root]
            self._pruned_at.pop(root, None)

    def prune_if_grown(self, replica: Replica) -> None:
        verified = self.of(replica)
        if len(verified) <= 2 * self._pruned_at.get(replica.root, 0) + 64:
            return
        present = {(f.path, f.size, f.mtime) for listing in replica.list_all().values() for f in listing.files}
        verified.intersection_update(present)
        self._pruned_at[replica.root] = len(verified)


def janitor_main(link: ChildLink, config: PoolConfig, held_off: Mapping[str, float], *,
                 memory: JanitorMemory | None = None) -> None:
    """Clean every replica every ``janitor_interval`` seconds until asked to stop.

    Each round first looks at every replica (``looked_after``: the configured ones and
    those of the databases found now) through ``memory``: one left clean by its last
    pass and unchanged since costs an ``lstat`` per level and is left alone; the others
    get their full pass. ``memory``: a disabled one for tests (every replica, every round).
    """
    memory = JanitorMemory() if memory is None else memory
    started = time.monotonic()
    not_before = {root: started + seconds for root, seconds in held_off.items()}
    verified = _Verified()
    problems: dict[str, set[str]] = {}
    skips: dict[str, SkipLog] = {}
    while not link.stopping:
        started = time.monotonic()
        link.busy("looking for changed replicas")
        # Found again each round, in one walk: new databases' replicas, and those whose files
        # the bucket must hold before retention deletes them.
        roots, shipped_off = looked_after(config)
        # A replica no longer looked after takes what was known of it along.
        memory.keep_only(roots)
        verified.keep_only(roots)
        for known in (problems, skips):
            for root in known.keys() - set(roots):
                del known[root]
        done = examined = unchanged = 0
        now = time.time()
        changed = []
        for root in roots:
            if not_before.get(root, 0.0) > time.monotonic():
                continue
            replica = Replica(root)
            skipped = memory.unchanged(replica, now)
            if skipped is None:
                changed.append(replica)
            else:
                unchanged += skipped
                done += 1
        for replica in changed:
            if link.stopping:
                break
            link.busy(f"cleaning {replica.root}", replica=replica.root)
            try:
                # Local retention never deletes a file the bucket does not hold yet (#16).
                shipped = read_shipped(replica) if replica.root in shipped_off else None
                report = janitor_pass(replica, config.janitor, time.time(), verified.of(replica), shipped)
                verified.prune_if_grown(replica)
            except (LtxpoolError, OSError) as exc:
                memory.forget(replica.root)
                log.error("%s: janitor round failed: %s", escape(replica.root), one_line(str(exc)))
                link.send(JanitorFailed(replica.root, exc))
                continue
            memory.remember(replica, report)
            examined += report.examined
            _log_report(report, problems.setdefault(replica.root, set()), skips.setdefault(replica.root, SkipLog()))
            if report.orphans_removed or report.retention_removed or report.quarantined or report.busy_dirs \
                    or report.lock_waits:
                link.send(JanitorReported(report))
            done += 1
        seconds = time.monotonic() - started
        log.debug("janitor round: %d of %d replicas, %d level directories examined, %d unchanged, %.3f s",
                  done, len(roots), examined, unchanged, seconds)
        link.send(JanitorRound(done, examined, unchanged, seconds))
        link.sleep(config.janitor_interval - seconds)
