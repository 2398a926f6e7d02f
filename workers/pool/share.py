"""One worker's share of the ``[[databases]]``: found, watched, stepped when they change.

The worker's loop (``ltxpool.pool.roles.worker_main``) asks this object three
things: which descriptor to sleep on (the change notification), what changed
(``absorb``: databases found, retired, written), and to step the database due
first (``step_due``). Everything about *when* is ``ltxpool.pool.replication``'s
:class:`DatabaseQueue`; everything about *what exists* is the
:class:`~ltxpool.discovery.watch.DatabaseWatch`; this module glues them to the
replicator and keeps the log readable at thousands of databases: a failure or a
claim that lasts is logged once, when it starts, and once when it ends.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ltxpool.discovery import Target, owner_of
from ltxpool.discovery.watch import Changes, DatabaseWatch
from ltxpool.display import escape, one_line
from ltxpool.errors import LtxpoolError
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.replication import CLAIM_RETRY, DatabaseQueue, QueuedDatabase
from ltxpool.replicate.errors import DatabaseBusyError, ReplicaBusyError
from ltxpool.replicate.replicator import Replicator, StepResult
from ltxpool.replicate.state import StateStore

__all__ = ["DatabaseShare", "StepOutcome", "RESCAN_INTERVAL"]

#: Seconds between two full scans of the entries: the safety net for missed events.
RESCAN_INTERVAL = 300.0

log = logging.getLogger("ltxpool.pool")


@dataclass(frozen=True)
class StepOutcome:
    """What one step of one database did: a file (``result``), nothing new, or an error."""

    target: Target
    result: StepResult | None = None
    lag: float = 0.0
    error: LtxpoolError | OSError | None = None


class DatabaseShare:
    """The databases ``owner_of`` gives worker ``index`` of ``config.workers``."""

    def __init__(self, config: PoolConfig, index: int, *, rescan_interval: float = RESCAN_INTERVAL) -> None:
        workers = config.workers
        self.index = index
        self.lock_timeout = config.lock_timeout
        self.rescan_interval = rescan_interval
        self.watch = DatabaseWatch(config.databases, owns=lambda path: owner_of(path, workers) == index)
        self.queue = DatabaseQueue()
        self.retired = 0
        self._next_rescan = math.inf
        #: Databases whose problem.json may hold a reason from before (cleared at the next success).
        self._maybe_problem: set[str] = set()

    def start(self, now: float, held_off: Mapping[str, float]) -> list[Target]:
        """Watch, then scan: every database of the share is due at once (what it committed unseen)."""
        found = self.watch.start()
        for target in found.values():
            self._add(target, now)
            if target.replica in held_off:
                self.queue.hold_off(target.database, now + held_off[target.replica])
        self._next_rescan = now + self.rescan_interval
        return list(found.values())

    def _add(self, target: Target, now: float) -> None:
        self.queue.add(target, now)
        self._maybe_problem.add(target.database)

    def fileno(self) -> int:
        return self.watch.fileno()

    def wake_at(self) -> float:
        return min(self.queue.wake_at(), self._next_rescan)

    def absorb(self, now: float) -> tuple[list[Target], list[Target]]:
        """Take in what the kernel reported (and the periodic rescan, when due);
        returns the databases found and those retired."""
        changes = self.watch.read()
        if now >= self._next_rescan:
            rescanned = self.watch.rescan()
            changes = Changes(changes.added + rescanned.added, changes.removed + rescanned.removed,
                              changes.changed | rescanned.changed)
            self._next_rescan = now + self.rescan_interval
        for target in changes.added:
            log.info("%s: found; replicating it to %s", escape(target.database), escape(target.replica))
            self._add(target, now)
        retired = []
        for database in changes.removed:
            entry = self.queue.remove(database)
            if entry is not None:
                self.retired += 1
                retired.append(entry.target)
                log.info("%s: source gone (deleted or moved away); retired, its replica kept", escape(database))
        for database in changes.changed:
            self.queue.changed(database, now)
        return list(changes.added), retired

    def pop_due(self, now: float) -> QueuedDatabase | None:
        return self.queue.pop_due(now)

    def step(self, entry: QueuedDatabase) -> StepOutcome:
        """Step one database: open, step, close -- nothing held between steps."""
        target = entry.target
        started = time.time()
        seen_at = entry.seen_at if entry.seen_at is not None else started
        try:
            with Replicator(target.database, target.replica, lock_timeout=self.lock_timeout) as replicator:
                result = replicator.step(seen_at)
                if target.database in self._maybe_problem:
                    replicator.store.clear_problem()
                    self._maybe_problem.discard(target.database)
        except ReplicaBusyError as exc:
            self.queue.retry(entry, time.time(), CLAIM_RETRY)
            self._report(entry, f"claimed by another process, retrying every {CLAIM_RETRY:g} s: {exc.reason}",
                         logging.INFO)
            return StepOutcome(target)
        except DatabaseBusyError as exc:
            self.queue.retry(entry, time.time(), target.interval)
            self._report(entry, f"{exc.reason}; retrying", logging.INFO)
            return StepOutcome(target)
        except (LtxpoolError, OSError) as exc:
            if _gone(target.database):
                # The watch reports the removal; until then, nothing to step.
                self.queue.retry(entry, time.time(), target.interval)
                return StepOutcome(target)
            delay = self.queue.failed(entry, time.time())
            reason = one_line(str(exc))
            if self._report(entry, f"replication failed: {reason} (retrying in {delay:.0f} s)", logging.ERROR):
                self._record_problem(target, reason, started)
            return StepOutcome(target, error=exc)
        if entry.reported:
            log.info("%s: replicating again", escape(target.database))
        self.queue.stepped(entry, started)
        durable = time.time()
        return StepOutcome(target, result, durable - seen_at if result is not None else 0.0)

    def _report(self, entry: QueuedDatabase, reason: str, level: int) -> bool:
        """Log ``reason`` once while it lasts; True when it is new."""
        if entry.reported == reason.split(" (retrying", 1)[0]:
            return False
        entry.reported = reason.split(" (retrying", 1)[0]
        log.log(level, "%s: %s", escape(entry.target.database), reason)
        return True

    def _record_problem(self, target: Target, reason: str, since: float) -> None:
        """Leave the reason where ``status`` reads it (best effort: the replica may not exist yet)."""
        try:
            with StateStore(target.replica) as store:
                store.record_problem(reason, since)
        except (LtxpoolError, OSError):
            return
        self._maybe_problem.add(target.database)

    def close(self) -> None:
        self.watch.close()


def _gone(path: str) -> bool:
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR)
    return False
