"""The supervisor's Prometheus metrics: what the children report, plus the status gauges.

Children never touch a registry: they send events (``ltxpool.pool.events``) over their pipe
and the supervisor counts them here, so one registry in one process holds every
counter and a child's restart loses none. ``serve`` exposes this registry and a
:class:`ltxpool.replica.status.StatusCollector` (per replica and level, read at scrape
time) and a :class:`ltxpool.pool.status_report.DatabaseCollector` (the databases: totals
by state, one series per database only with ``[metrics] per_database``) over HTTP.
Labels stay few on purpose: ``level``, ``role`` and ``state`` are small sets; ``replica``
appears only on the failure counters, which exist for failing replicas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ltxpool.discovery import DatabaseEntry
from ltxpool.display import escape
from ltxpool.pool.events import (
    Busy,
    Compacted,
    CompactionFailed,
    DatabasesKnown,
    Event,
    JanitorFailed,
    JanitorReported,
    JanitorRound,
    Replicated,
    ReplicationFailed,
    ShipFailed,
    Shipped,
)
from ltxpool.pool.metrics_server import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, MetricsServer, is_loopback
from ltxpool.pool.status_report import DatabaseCollector
from ltxpool.replica.compactor import CompactionResult
from ltxpool.replica.janitor import JanitorReport
from ltxpool.replica.status import StatusCollector

__all__ = ["PoolMetrics"]

log = logging.getLogger("ltxpool.metrics")

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_WAITS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class PoolMetrics:
    """Counters of the running pool, fed from child events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.compactions = Counter("ltxpool_compactions", "Compactions written, by target level", ["level"], registry=r)
        self.compaction_inputs = Counter("ltxpool_compaction_input_files", "Files merged by compactions",
                                         ["level"], registry=r)
        self.compaction_bytes = Counter("ltxpool_compaction_written_bytes", "Bytes written by compactions",
                                        ["level"], registry=r)
        self.compaction_seconds = Histogram("ltxpool_compaction_duration_seconds", "Time to compact one level",
                                            ["level"], buckets=_SECONDS, registry=r)
        self.compaction_failures = Counter("ltxpool_compaction_failures", "Compaction passes that raised an error",
                                           ["replica"], registry=r)
        self.schedule_lag = Histogram("ltxpool_schedule_lag_seconds",
                                      "How late a due compaction pass started (all workers busy)",
                                      buckets=_SECONDS, registry=r)
        self.replicated = Counter("ltxpool_replicated_files", "LTX files written by the pool's replication, by kind",
                                  ["kind"], registry=r)
        self.replicated_bytes = Counter("ltxpool_replicated_bytes", "Bytes written by the pool's replication",
                                        registry=r)
        self.replication_failures = Counter("ltxpool_replication_failures", "Replication steps that raised an error",
                                            registry=r)
        self.replication_lag = Histogram("ltxpool_replication_lag_seconds",
                                         "From noticing a database's change to its LTX file being durable",
                                         buckets=_SECONDS, registry=r)
        self.databases = Gauge("ltxpool_worker_databases", "Databases the workers replicate now (their shares together)",
                               registry=r)
        self.databases_retired = Gauge("ltxpool_worker_databases_retired",
                                       "Databases retired since the workers started (source gone)", registry=r)
        self.watches = Gauge("ltxpool_inotify_watches", "Change-notification watches the workers hold", registry=r)
        self._shares: dict[int, DatabasesKnown] = {}
        self.janitor_rounds = Counter("ltxpool_janitor_rounds", "Janitor rounds over all replicas", registry=r)
        self.janitor_directories = Counter("ltxpool_janitor_directories",
                                           "Level directories per janitor round: examined (full pass) or "
                                           "unchanged (one lstat, no lock)", ["result"], registry=r)
        self.janitor_round_seconds = Histogram("ltxpool_janitor_round_duration_seconds",
                                               "Time one janitor round over all replicas took", buckets=_SECONDS,
                                               registry=r)
        self.janitor_orphans = Counter("ltxpool_janitor_orphans_removed", "Orphaned temp files removed", registry=r)
        self.janitor_retention = Counter("ltxpool_janitor_retention_removed", "LTX files removed by retention",
                                         registry=r)
        self.janitor_quarantined = Counter("ltxpool_janitor_quarantined", "Corrupt LTX files moved to quarantine",
                                           registry=r)
        self.janitor_busy = Counter("ltxpool_janitor_busy_dirs",
                                    "Directories skipped because writes in flight outlasted the cleaning timeout",
                                    registry=r)
        self.janitor_lock_wait = Histogram("ltxpool_janitor_lock_wait_seconds",
                                           "How long the janitor waited for a directory lock", buckets=_WAITS,
                                           registry=r)
        self.janitor_failures = Counter("ltxpool_janitor_failures", "Janitor passes that raised an error",
                                        ["replica"], registry=r)
        self.shipped = Counter("ltxpool_remote_shipped_objects", "LTX files uploaded to the remotes", registry=r)
        self.shipped_bytes = Counter("ltxpool_remote_shipped_bytes", "Bytes uploaded to the remotes", registry=r)
        self.ship_failures = Counter("ltxpool_remote_upload_failures",
                                     "Shipper passes over a replica that failed or were refused", registry=r)
        self.remote_lag = Gauge("ltxpool_remote_lag_seconds", "The largest remote lag: seconds since the oldest "
                                "local file some bucket lacks became durable (0: every bucket is up to date)",
                                registry=r)
        self._lags: dict[str, float] = {}
        self.restarts = Counter("ltxpool_child_restarts", "Children restarted after a crash or a hang",
                                ["role"], registry=r)
        self.hang_kills = Counter("ltxpool_child_hang_kills", "Children killed for hanging past hang_timeout",
                                  ["role"], registry=r)
        self.children = Gauge("ltxpool_children", "Running child processes", ["role"], registry=r)

    def record(self, event: Event) -> None:
        """Count one event from a child."""
        if isinstance(event, Compacted):
            self._compacted(event.result)
        elif isinstance(event, CompactionFailed):
            self.compaction_failures.labels(event.replica).inc()
        elif isinstance(event, JanitorReported):
            self._janitor(event.report)
        elif isinstance(event, JanitorRound):
            self.janitor_rounds.inc()
            self.janitor_directories.labels("examined").inc(event.examined)
            self.janitor_directories.labels("unchanged").inc(event.unchanged)
            self.janitor_round_seconds.observe(event.seconds)
        elif isinstance(event, JanitorFailed):
            self.janitor_failures.labels(event.replica).inc()
        elif isinstance(event, Busy) and event.what.startswith("compacting"):
            self.schedule_lag.observe(event.lag)
        elif isinstance(event, Replicated):
            self.replicated.labels("snapshot" if event.snapshot else "incremental").inc()
            self.replicated_bytes.inc(event.bytes)
            self.replication_lag.observe(event.lag)
        elif isinstance(event, ReplicationFailed):
            self.replication_failures.inc()
        elif isinstance(event, Shipped):
            self.shipped.inc(event.objects)
            self.shipped_bytes.inc(event.bytes)
            # The lag of a pass that left nothing pending is over once the pass is.
            self._lags[event.replica] = event.lag if event.pending else 0.0
            self.remote_lag.set(max(self._lags.values(), default=0.0))
        elif isinstance(event, ShipFailed):
            self.ship_failures.inc()
        elif isinstance(event, DatabasesKnown):
            self._shares[event.worker] = event
            self.databases.set(sum(share.databases for share in self._shares.values()))
            self.databases_retired.set(sum(share.retired for share in self._shares.values()))
            self.watches.set(sum(share.watches for share in self._shares.values()))

    def _compacted(self, result: CompactionResult) -> None:
        level = str(result.level)
        self.compactions.labels(level).inc()
        self.compaction_inputs.labels(level).inc(result.inputs)
        self.compaction_bytes.labels(level).inc(result.bytes_written)
        self.compaction_seconds.labels(level).observe(result.seconds)

    def _janitor(self, report: JanitorReport) -> None:
        self.janitor_orphans.inc(report.orphans_removed)
        self.janitor_retention.inc(report.retention_removed)
        self.janitor_quarantined.inc(report.quarantined)
        self.janitor_busy.inc(report.busy_dirs)
        for waited in report.lock_waits:
            self.janitor_lock_wait.observe(waited)

    def serve(
        self,
        port: int,
        address: str,
        roots: Callable[[], Sequence[str]],
        foreign_temp_age: float,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        databases: Callable[[], Sequence[DatabaseEntry]] | None = None,
        per_database: bool = False,
    ) -> MetricsServer:
        """Serve these counters and the replicas' status on ``http://address:port/metrics``.

        With ``databases`` (the ``[[databases]]`` entries now), their status too: totals
        by state, and one series per database only with ``per_database``.

        Warns once when the address reaches beyond this host: the metrics name every
        replica path, and whoever can connect can read them.
        """
        self.registry.register(StatusCollector(roots, foreign_temp_age))
        if databases is not None:
            self.registry.register(DatabaseCollector(databases, foreign_temp_age, per_database))
        server = MetricsServer(self.registry, address, port, timeout=timeout, max_connections=max_connections)
        server.start()
        if not is_loopback(address):
            log.warning("metrics server listens on %s:%d, beyond loopback: anyone who can reach it reads "
                        "every replica's path and state", escape(address or "*"), server.port)
        return server
