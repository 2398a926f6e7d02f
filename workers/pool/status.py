"""The status of every database the pool replicates: its state, lag, last error and replica's health.

The databases are what the ``[[databases]]`` entries match now (``ltxpool.discovery.scan``)
plus the *retired* ones: a replica directory (one holding ``.ltxpool-replicate/state.json``)
under an entry's ``replica_root``, or an entry's ``replica``, that belongs to no database
matched now. Its database was deleted or moved away; the replica is kept and its state
is "source gone".

States, worst first (``STATES``):

* *failing* -- the replicate recorded a ``problem.json`` (the reason and since when);
* *unreadable* -- its replica or state file could not be read (the cause);
* *lagging* -- the database or its ``-wal`` changed after the latest durable step
  (``durable_at``) and longer ago than its interval plus a second: the change is late;
  its current lag is the age of that change;
* *never replicated yet*, *source gone*, *replicated*.

Lag: the latest step's ``durable_at - seen_at`` (``ltxpool.replicate.state_reader``),
unless lagging. A state without those keys has no lag: unknown, not an error.

Read-only and lock-free like the replica status, and cheap per database: the replica's
health is the quick status (listings, temp files, quarantine; no restore chain check)
unless ``deep`` is asked for, and ``/proc/locks`` is read once for all databases.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ltxpool.discovery import DatabaseDir, DatabaseEntry, DatabaseFile, Target, scan
from ltxpool.errors import LtxpoolError
from ltxpool.locks.holders import LockTable
from ltxpool.pool.remote_status import RemoteStatus
from ltxpool.replica.janitor import DEFAULT_FOREIGN_TEMP_AGE
from ltxpool.replica.layout import STATE_DIR, Replica
from ltxpool.replica.status import ReplicaStatus, guarded_status
from ltxpool.replicate.state_reader import RecordedState, read_recorded_state

__all__ = [
    "STATES",
    "FAILING",
    "UNREADABLE",
    "LAGGING",
    "NEVER",
    "GONE",
    "REPLICATED",
    "DatabaseStatus",
    "database_statuses",
    "redo_deep",
    "worst_first",
    "summary",
    "percentile",
]

FAILING, UNREADABLE, LAGGING = "failing", "unreadable", "lagging"
NEVER, GONE, REPLICATED = "never replicated yet", "source gone", "replicated"
#: Every state a database can be in, worst first.
STATES = (FAILING, UNREADABLE, LAGGING, NEVER, GONE, REPLICATED)
#: A change counts as late once it is older than the database's interval plus this.
LATE_MARGIN = 1.0


@dataclass
class DatabaseStatus:
    """One database: its state, TXID, lag, last error and its replica's health."""

    #: The database's path; None when its replica's state file could not be read.
    database: str | None
    replica: str
    state: str
    health: ReplicaStatus
    interval: float | None = None
    txid: int | None = None
    seen_at: float | None = None
    durable_at: float | None = None
    #: The latest step's ``durable_at - seen_at``; None: unknown.
    last_lag: float | None = None
    #: The lag now: the late change's age when lagging, else ``last_lag``.
    lag: float | None = None
    last_error: str | None = None
    error_since: float | None = None
    #: Why it is "source gone", or why it is unreadable.
    note: str | None = None
    #: Its off-host copy (``status --remote``, for a database with a remote); None: not asked or none.
    remote: RemoteStatus | None = None

    @property
    def orphans(self) -> int:
        return sum(level.orphan_temp_files for level in self.health.levels)

    @property
    def quarantined(self) -> int:
        return self.health.quarantined

    @property
    def damaged(self) -> bool:
        """Orphaned temp files or quarantined files: the janitor's work, worth a look."""
        return bool(self.orphans or self.quarantined)


def _empty(root: str) -> ReplicaStatus:
    return ReplicaStatus(root=root, levels=[], deep=False)


def _late_change(database: str, durable_at: float | None, interval: float, now: float) -> float | None:
    """The age of the oldest change to the database (or its WAL) that is newer than the latest
    durable step and older than ``interval`` + ``LATE_MARGIN``; None when there is none."""
    if durable_at is None:
        return None
    ages = []
    for path in (database, database + "-wal"):
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            continue
        if durable_at < mtime < now - (interval + LATE_MARGIN):
            ages.append(now - mtime)
    return max(ages, default=None)


def _recorded(replica: str) -> tuple[RecordedState | None, str | None]:
    """The replica's recorded state, or why it could not be read."""
    try:
        return read_recorded_state(Replica(replica)), None
    except LtxpoolError as exc:
        return None, str(exc)


def _status_of(database: str | None, replica: str, interval: float | None, retired: str | None, now: float,
               foreign_temp_age: float, deep: bool, locks: LockTable) -> DatabaseStatus:
    """``retired``: why the database is gone (None: it is matched now)."""
    recorded, unreadable = _recorded(replica)
    if recorded is not None and database is None:
        database = recorded.database
    if retired is None and recorded is None and unreadable is None and not os.path.lexists(replica):
        health = _empty(replica)  # nothing written yet: no replica directory is no problem
    else:
        health = guarded_status(replica, now, foreign_temp_age, deep=deep, locks=locks)
    status = DatabaseStatus(database, replica, REPLICATED, health, interval)
    problem = health.recorded_problem
    if problem is not None:
        status.last_error, status.error_since = problem.reason, problem.since
    if recorded is not None:
        status.txid, status.seen_at, status.durable_at = recorded.txid, recorded.seen_at, recorded.durable_at
        status.last_lag = status.lag = recorded.last_lag
    if unreadable is None and health.unreadable is not None:
        unreadable = health.unreadable
    if retired is not None:
        status.state, status.note = (UNREADABLE, unreadable) if unreadable is not None else (GONE, retired)
    elif problem is not None:
        status.state = FAILING
    elif unreadable is not None:
        status.state, status.note = UNREADABLE, unreadable
    elif recorded is None or recorded.txid == 0:
        status.state = NEVER
    else:
        assert database is not None and interval is not None
        late = _late_change(database, recorded.durable_at, interval, now)
        if late is not None:
            status.state, status.lag = LAGGING, late
    return status


def _replica_dirs(top: str) -> Iterator[str]:
    """Every directory under ``top`` holding a ``.ltxpool-replicate`` folder, never through a link.

    A replica's own layout (``ltx``, ``quarantine``, its state) is not entered: nothing
    in it is another replica.
    """
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                folders, is_replica = [], False
                for item in entries:
                    if not item.is_dir(follow_symlinks=False):
                        continue
                    if item.name == STATE_DIR:
                        is_replica = True
                    else:
                        folders.append(item.name)
        except OSError:
            continue
        if is_replica:
            yield folder
            folders = [name for name in folders if name not in ("ltx", "quarantine")]
        pending.extend(os.path.join(folder, name) for name in sorted(folders, reverse=True))


def _retired(entries: Sequence[DatabaseEntry], targets: dict[str, Target]) -> Iterator[tuple[str, float]]:
    """(replica, interval) of every replica the entries own that no database matched now belongs to."""
    current = {target.replica for target in targets.values()}
    seen: set[str] = set()
    for entry in entries:
        candidates: Iterator[str]
        if isinstance(entry, DatabaseFile):
            candidates = iter((entry.replica,))
        else:
            assert isinstance(entry, DatabaseDir)
            candidates = _replica_dirs(entry.replica_root)
        for replica in candidates:
            if replica in current or replica in seen:
                continue
            seen.add(replica)
            if os.path.lexists(os.path.join(replica, STATE_DIR, "state.json")):
                yield replica, entry.interval


def _why_gone(recorded: str | None, targets: dict[str, Target]) -> str:
    if recorded is None:
        return "its database is unknown"
    if recorded in targets:
        return f"its database is replicated to {targets[recorded].replica} now"
    try:
        os.lstat(recorded)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "the database is gone: no such file"
        return f"the database is gone: {exc.strerror}"
    return "no [[databases]] entry matches the database now"


def database_statuses(entries: Sequence[DatabaseEntry], now: float,
                      foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE, *, deep: bool = False,
                      locks: LockTable | None = None) -> list[DatabaseStatus]:
    """The status of every database the entries match now, then of every retired one."""
    table = locks or LockTable.read()
    targets = scan(entries)
    found = [_status_of(t.database, t.replica, t.interval, None, now, foreign_temp_age, deep, table)
             for t in sorted(targets.values())]
    for replica, interval in _retired(entries, targets):
        recorded, _ = _recorded(replica)
        database = None if recorded is None else recorded.database
        why = _why_gone(database, targets)
        found.append(_status_of(database, replica, interval, why, now, foreign_temp_age, deep, table))
    return found


def redo_deep(statuses: Sequence[DatabaseStatus], now: float,
              foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE) -> None:
    """Replace the quick health of these (the rows shown) by the deep one: restore chain, ladder."""
    table = LockTable.read()
    for status in statuses:
        if not status.health.deep and (status.txid is not None or os.path.lexists(status.replica)):
            status.health = guarded_status(status.replica, now, foreign_temp_age, deep=True, locks=table)


def worst_first(status: DatabaseStatus) -> tuple[int, float, str]:
    """Sort key: failing, unreadable, lagging (most behind first), damaged, then the rest by state."""
    if status.state in (FAILING, UNREADABLE, LAGGING):
        rank = STATES.index(status.state)
    elif status.damaged:
        rank = len(STATES)
    else:
        rank = len(STATES) + 1 + STATES.index(status.state)
    behind = -(status.lag or 0.0) if status.state == LAGGING else 0.0
    return rank, behind, status.database or status.replica


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def summary(statuses: Sequence[DatabaseStatus]) -> dict[str, int | float | None]:
    """Counts per state (they add up to ``databases``), databases with orphans or quarantined
    files, and the largest and 99th-percentile lag of the databases whose lag is known."""
    counts: dict[str, int | float | None] = {"databases": len(statuses)}
    for state in STATES:
        counts[state.replace(" yet", "").replace(" ", "_")] = sum(status.state == state for status in statuses)
    counts["orphans"] = sum(status.orphans > 0 for status in statuses)
    counts["quarantined"] = sum(status.quarantined > 0 for status in statuses)
    counts["orphan_files"] = sum(status.orphans for status in statuses)
    counts["quarantined_files"] = sum(status.quarantined for status in statuses)
    lags = [status.lag for status in statuses if status.lag is not None and status.state != GONE]
    counts["lag_known"] = len(lags)
    counts["max_lag_seconds"] = max(lags, default=None)
    counts["p99_lag_seconds"] = percentile(lags, 0.99)
    return counts
