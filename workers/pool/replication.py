"""Replication as pool work: each worker replicates its share of the databases, when they change.

Who: the database's owner, ``owner_of(path, workers)``, a hash of its path, so a
restarted worker takes over exactly its predecessor's share and two workers never
both reach for one database. Exactly-one is still the claim's job, not the hash's:
a step opens the replica's state store, which holds the per-replica claim
(``ltxpool.replicate.state``) for the step, so a manual ``ltxpool replicate`` of the
same database (which holds it for its life) and the pool never both write; whichever
comes second is told who holds it (the pool retries every ``CLAIM_RETRY`` seconds).

When: never by polling. The worker's :class:`~ltxpool.discovery.watch.DatabaseWatch`
reports a database as changed when the kernel says its file, ``-wal`` or
``-journal`` was written; the step is then due at once, or ``interval`` seconds
after the previous one, whichever is later (so a busy database costs one step per
interval, not one per commit). A database is also stepped once when it is found
(at start, or when created): whatever it committed while nobody watched. Nothing is
read for a database that does not change.

Each step opens the replicator, steps and closes it: the pool holds no SQLite
connection, no descriptor and no claim of an idle database, so an app's last close
still checkpoints and deletes its WAL, and the open files do not grow with the
number of databases. (The step's own connection makes events too, but only
creates, closes and deletes, which the watch does not count as changes.)
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from ltxpool.discovery.entries import Target

__all__ = ["DatabaseQueue", "QueuedDatabase", "CLAIM_RETRY", "FAILURE_BACKOFF_MAX"]

#: Seconds before a database claimed by another process (a manual replicate) is tried again.
CLAIM_RETRY = 5.0
#: The longest wait before retrying a database whose steps keep failing.
FAILURE_BACKOFF_MAX = 60.0


@dataclass
class QueuedDatabase:
    """One database of this worker's share and what the queue knows about it."""

    target: Target
    due: float = math.inf
    #: When the change the next step will write was first noticed (None: nothing pending).
    seen_at: float | None = None
    last_step: float = -math.inf
    failures: int = 0
    not_before: float = 0.0
    version: int = 0
    #: The reason last logged for a failure or a claim, so a lasting one is logged once.
    reported: str = ""


class DatabaseQueue:
    """The due times of one worker's databases, earliest first (wall-clock seconds)."""

    def __init__(self, claim_retry: float = CLAIM_RETRY, failure_backoff_max: float = FAILURE_BACKOFF_MAX) -> None:
        self.claim_retry = claim_retry
        self.failure_backoff_max = failure_backoff_max
        self.databases: dict[str, QueuedDatabase] = {}
        self._heap: list[tuple[float, int, str]] = []

    def __len__(self) -> int:
        return len(self.databases)

    def __contains__(self, database: object) -> bool:
        return database in self.databases

    def _set(self, entry: QueuedDatabase, due: float) -> None:
        entry.due = max(due, entry.not_before)
        entry.version += 1
        if entry.due != math.inf:
            heapq.heappush(self._heap, (entry.due, entry.version, entry.target.database))

    def add(self, target: Target, now: float) -> None:
        """A database found (at start or created): step it now, for what it committed unseen."""
        if target.database in self.databases:
            self.databases[target.database].target = target
        else:
            self.databases[target.database] = QueuedDatabase(target)
        self.changed(target.database, now)

    def remove(self, database: str) -> QueuedDatabase | None:
        """A database gone (deleted, moved away): no more steps."""
        return self.databases.pop(database, None)

    def changed(self, database: str, now: float) -> None:
        """The kernel says it was written: due now, or one interval after its last step."""
        entry = self.databases.get(database)
        if entry is None:
            return
        if entry.seen_at is None:
            entry.seen_at = now
        due = max(now, entry.last_step + entry.target.interval)
        if due < entry.due:
            self._set(entry, due)

    def hold_off(self, database: str, until: float) -> None:
        """No step before ``until`` (a death on this database's replica was charged to it)."""
        entry = self.databases.get(database)
        if entry is not None:
            entry.not_before = max(entry.not_before, until)
            if entry.due != math.inf:
                self._set(entry, entry.due)

    def pop_due(self, now: float) -> QueuedDatabase | None:
        """The database whose step is due first, or None before then."""
        while self._heap:
            due, version, database = self._heap[0]
            entry = self.databases.get(database)
            if entry is None or entry.version != version:
                heapq.heappop(self._heap)
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            entry.due = math.inf
            entry.version += 1
            return entry
        return None

    def stepped(self, entry: QueuedDatabase, started: float) -> None:
        """The step that started at ``started`` succeeded: what was seen before it is written.

        A change noticed while the step ran (``changed`` during it) stays pending,
        due one interval after this step.
        """
        entry.last_step = started
        entry.failures = 0
        entry.not_before = 0.0
        entry.reported = ""
        if entry.seen_at is not None and entry.seen_at <= started:
            entry.seen_at = None
        if entry.seen_at is not None:
            self._set(entry, started + entry.target.interval)

    def retry(self, entry: QueuedDatabase, now: float, delay: float) -> None:
        """Try again in ``delay`` seconds; what was seen stays pending."""
        entry.not_before = now + delay
        self._set(entry, now + delay)

    def failed(self, entry: QueuedDatabase, now: float) -> float:
        """A step raised: retry later, later each time; returns the delay."""
        entry.failures += 1
        delay = min(entry.target.interval * 2.0 ** entry.failures, self.failure_backoff_max)
        self.retry(entry, now, delay)
        return delay

    def wake_at(self) -> float:
        """When the next step is due (infinite: none pending)."""
        while self._heap:
            due, version, database = self._heap[0]
            entry = self.databases.get(database)
            if entry is not None and entry.version == version:
                return due
            heapq.heappop(self._heap)
        return math.inf

    def lag(self, now: float) -> float:
        """The oldest change seen and not yet written, in seconds (0: none pending)."""
        oldest = min((entry.seen_at for entry in self.databases.values() if entry.seen_at is not None),
                     default=now)
        return now - oldest
