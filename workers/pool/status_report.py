"""The databases' status as an operator reads it: summary and worst-first table, JSON, Prometheus.

Prometheus labels stay bounded unless asked otherwise: the aggregate gauges have one
label, ``state``, of ``len(STATES)`` values, whatever the number of databases; the
per-database series (``database`` and ``replica`` labels: one series per database and
metric) exist only with ``per_database`` (``status --per-database``, or
``[metrics] per_database = true`` for the pool's ``/metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ltxpool.discovery import DatabaseEntry
from ltxpool.display import escape, one_line
from ltxpool.pool.resources import PoolResources, max_user_watches
from ltxpool.pool.status import STATES, DatabaseStatus, database_statuses, summary
from ltxpool.replica.janitor import DEFAULT_FOREIGN_TEMP_AGE
from ltxpool.replica.status import human_age, status_document

__all__ = ["format_summary", "format_databases", "format_resources", "database_document", "database_metrics",
           "DatabaseCollector"]

_LABELS = (("databases", "databases"), ("replicated", "replicated"), ("never_replicated", "never replicated yet"),
           ("lagging", "lagging"), ("failing", "failing"), ("source_gone", "source gone"),
           ("unreadable", "unreadable"), ("orphans", "with orphans"), ("quarantined", "with quarantined files"))


def format_summary(statuses: Sequence[DatabaseStatus]) -> str:
    """``name: count`` lines, then the lag line."""
    counts = summary(statuses)
    width = max(len(label) for _, label in _LABELS) + 1
    lines = [f"{label + ':':<{width}} {counts[key]}" for key, label in _LABELS]
    lines.append(f"{'lag:':<{width}} max {human_age(counts['max_lag_seconds'])}, "
                 f"p99 {human_age(counts['p99_lag_seconds'])} ({counts['lag_known']} databases with a known lag)")
    return "\n".join(lines)


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.1f} MiB"


def _of(value: int | None, limit: int | None) -> str:
    shown = "?" if value is None else str(value)
    return shown if limit is None else f"{shown} of {limit}"


def format_resources(pools: Sequence[PoolResources], watch_limit: int | None = None) -> str:
    """The ``pool:`` block: per pool its totals, then a line per process."""
    if not pools:
        return "pool: no ltxpool supervise running"
    limit = watch_limit if watch_limit is not None else max_user_watches()
    lines = []
    for pool in pools:
        config = "-" if pool.config is None else escape(pool.config)
        lines.append(f"pool: config {config}: {len(pool.processes)} processes, rss {_mib(pool.total('rss_bytes'))}, "
                     f"open files {_of(pool.total('open_files'), None)}, "
                     f"inotify watches {_of(pool.total('inotify_watches'), limit)} (per user)")
        for process in pool.processes:
            line = (f"  {process.role} pid {process.pid}: rss {_mib(process.rss_bytes)}, "
                    f"open files {_of(process.open_files, process.open_files_limit)}, "
                    f"inotify watches {_of(process.inotify_watches, None)}")
            if process.unreadable:
                line += f"; unreadable: {', '.join(process.unreadable)}"
            lines.append(line)
    return "\n".join(lines)


_COLUMNS = ("STATE", "DATABASE", "REPLICA", "TXID", "LAG", "ORPHANS", "QUARANTINED", "LAST_ERROR")


def _error(status: DatabaseStatus, now: float) -> str:
    parts = []
    if status.last_error is not None:
        since = "" if status.error_since is None else f" (for {human_age(max(now - status.error_since, 0.0))})"
        parts.append(f"{status.last_error}{since}")
    if status.note is not None:
        parts.append(status.note)
    parts.extend(status.health.restore_problems)
    return "; ".join(parts) or "-"


def format_databases(statuses: Sequence[DatabaseStatus], total: int, now: float) -> str:
    """One line per database, in the order given (worst first); a last line when some were left out."""
    rows = [_COLUMNS]
    for status in statuses:
        rows.append((
            status.state,
            "?" if status.database is None else escape(status.database),
            escape(status.replica),
            "-" if status.txid is None else str(status.txid),
            human_age(status.lag),
            str(status.orphans),
            str(status.quarantined),
            one_line(_error(status, now)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])), row[-1]]) for row in rows]
    for index, status in enumerate(statuses, start=1):
        if status.remote is not None:
            lines[index] += "\n    " + _remote_line(status)
    if len(statuses) < total:
        lines.append(f"({len(statuses)} of {total} databases shown, worst first; --top N or --all for more)")
    return "\n".join(lines)


def _remote_line(status: DatabaseStatus) -> str:
    remote = status.remote
    assert remote is not None
    if remote.error is not None:
        return f"remote {escape(remote.url)}: {one_line(remote.error)}"
    newest = "-" if remote.newest_txid is None else str(remote.newest_txid)
    return (f"remote {escape(remote.url)}: {remote.objects} objects, {_mib(remote.bytes)}, newest TXID {newest}, "
            f"behind local by {remote.lag_txids or 0} TXIDs, {remote.pending} files, {human_age(remote.lag_seconds)}")


def _one(status: DatabaseStatus) -> dict[str, Any]:
    health = status_document([status.health], 0.0)["replicas"][0]
    for key in ("root", "replicate_problem"):
        health.pop(key)
    return {
        "database": status.database, "replica": status.replica, "state": status.state,
        "interval": status.interval, "txid": status.txid, "seen_at": status.seen_at,
        "durable_at": status.durable_at, "last_lag_seconds": status.last_lag, "lag_seconds": status.lag,
        "last_error": status.last_error, "error_since": status.error_since, "note": status.note,
        "orphans": status.orphans, "quarantined": status.quarantined, "health": health,
        "remote": None if status.remote is None else status.remote.document(),
    }


def database_document(statuses: Sequence[DatabaseStatus]) -> dict[str, Any]:
    """``summary`` and ``databases`` of the ``--json`` form."""
    return {"summary": summary(statuses), "databases": [_one(status) for status in statuses]}


def database_metrics(statuses: Sequence[DatabaseStatus], per_database: bool = False) -> Iterator[GaugeMetricFamily]:
    """Aggregate gauges (label ``state`` only); with ``per_database``, lag, TXID and failing per database."""
    counts = summary(statuses)
    by_state = GaugeMetricFamily("ltxpool_databases", "Databases by state (they add up to all databases)",
                                 labels=["state"])
    for state in STATES:
        by_state.add_metric([state], sum(status.state == state for status in statuses))
    yield by_state
    yield GaugeMetricFamily("ltxpool_databases_with_orphans", "Databases whose replica holds orphaned temp files",
                            value=float(counts["orphans"] or 0))
    yield GaugeMetricFamily("ltxpool_databases_with_quarantined_files",
                            "Databases whose replica holds quarantined files", value=float(counts["quarantined"] or 0))
    for key, name, text in (("max_lag_seconds", "ltxpool_databases_lag_max_seconds", "Largest replication lag"),
                            ("p99_lag_seconds", "ltxpool_databases_lag_p99_seconds",
                             "99th percentile of the replication lag")):
        value = counts[key]
        if value is not None:
            yield GaugeMetricFamily(name, f"{text} of the databases whose lag is known", value=float(value))
    if not per_database:
        return
    labels = ["database", "replica"]
    lag = GaugeMetricFamily("ltxpool_database_lag_seconds", "Replication lag of the database (now, when late)",
                            labels=labels)
    txid = GaugeMetricFamily("ltxpool_database_txid", "The database's replicated TXID", labels=labels)
    failing = GaugeMetricFamily("ltxpool_database_failing", "1 if the replicate recorded a problem", labels=labels)
    for status in statuses:
        names = ["" if status.database is None else escape(status.database), escape(status.replica)]
        if status.lag is not None:
            lag.add_metric(names, status.lag)
        if status.txid is not None:
            txid.add_metric(names, status.txid)
        failing.add_metric(names, 1 if status.last_error is not None else 0)
    yield from (lag, txid, failing)


class DatabaseCollector(Collector):
    """The databases' status for /metrics, gathered again only when the last gathering is old.

    Gathering reads every replica (about a millisecond each): at 10,000 databases a
    scrape every 15 s would keep a core busy. So a gathering is reused until it is
    ``DUTY`` times its own duration old (and at least ``min_age`` seconds): the cost is
    bounded to 1/DUTY of a core whatever the number of databases, and
    ``ltxpool_database_status_age_seconds`` says how old the figures are.
    """

    #: A gathering is reused until it is this many times its own duration old.
    DUTY = 50.0

    def __init__(self, entries: Callable[[], Sequence[DatabaseEntry]],
                 foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE, per_database: bool = False,
                 min_age: float = 0.0) -> None:
        self._entries = entries
        self._foreign_temp_age = foreign_temp_age
        self._per_database = per_database
        self._min_age = min_age
        self._gathered: tuple[float, float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        if self._gathered is None or now - self._gathered[0] >= max(self._min_age, self.DUTY * self._gathered[1]):
            statuses = database_statuses(self._entries(), time.time(), self._foreign_temp_age)
            families = list(database_metrics(statuses, self._per_database))
            self._gathered = (now, time.monotonic() - now, families)
        at, _, families = self._gathered
        yield from families
        age = GaugeMetricFamily("ltxpool_database_status_age_seconds",
                                "How old the databases' status figures are (they are gathered again only "
                                "when old compared with what gathering costs)")
        age.add_metric([], time.monotonic() - at)
        yield age
