"""``ltxpool status``: per replica and level, what is there and what is wrong."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ltxpool.cli.argtypes import positive_int, seconds
from ltxpool.display import escape
from ltxpool.pool.config import PoolConfig, load_config
from ltxpool.pool.remote_status import remote_status
from ltxpool.pool.replicas import remote_replicas
from ltxpool.pool.resources import PoolResources, find_pools, resources_document
from ltxpool.pool.status import UNREADABLE, DatabaseStatus, database_statuses, redo_deep, worst_first
from ltxpool.pool.status_report import (
    database_document,
    database_metrics,
    format_databases,
    format_resources,
    format_summary,
)
from ltxpool.replica.janitor import DEFAULT_FOREIGN_TEMP_AGE
from ltxpool.replica.status import (
    ReplicaStatus,
    format_table,
    guarded_status,
    status_document,
    status_metrics,
)

NAME = "status"
HELP = (
    "Show each replica's levels: files, bytes, TXID range, gaps, overlaps, temp files and orphans, "
    "quarantined files, age of the newest file. With --config, every database the pool replicates "
    "(a summary, then the worst first: state, TXID, lag, last error) and what the running pool costs "
    "(memory, open files, inotify watches). Reads only; takes no lock. "
    "A replica that cannot be read is reported as unreadable (exit 1); the others still are."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replicas", nargs="*", metavar="REPLICA", help="replica root directories")
    parser.add_argument("--config", metavar="FILE",
                        help="the pool's TOML configuration: its [[databases]], retired ones and its replicas")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--prometheus", action="store_true", help="print Prometheus text exposition format")
    parser.add_argument("--foreign-temp-age", type=seconds, default=None, metavar="SECONDS",
                        help="another tool's *.tmp older than this counts as an orphan "
                        "(default: the config's, else 3600)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--top", type=positive_int, default=20, metavar="N",
                       help="databases in the table, worst first (default 20)")
    shown.add_argument("--all", action="store_true", help="every database in the table")
    parser.add_argument("--per-database", action="store_true",
                        help="--prometheus: also one series per database (lag, TXID, failing)")
    parser.add_argument("--remote", action="store_true",
                        help="with --config: list each database's bucket prefix too (objects, bytes, newest TXID, "
                             "lag behind local); one listing per database with a remote")
    parser.add_argument("--deep", action="store_true",
                        help="also check each shown database's restore chain and ladder cost (reads LTX headers)")


class _Snapshot(Collector):
    """Statuses already gathered, as gauges."""

    def __init__(self, statuses: list[ReplicaStatus], databases: list[DatabaseStatus] | None,
                 per_database: bool) -> None:
        self._statuses = statuses
        self._databases = databases
        self._per_database = per_database

    def collect(self) -> Iterator[Metric]:
        if self._databases is not None:
            yield from database_metrics(self._databases, self._per_database)
        yield from status_metrics(self._statuses)


def run(args: argparse.Namespace) -> int:
    if not args.replicas and args.config is None:
        print("ltxpool status: error: give REPLICA directories, --config FILE, or both", file=sys.stderr)
        return 2
    config = load_config(args.config) if args.config is not None else PoolConfig()
    foreign_temp_age = (args.foreign_temp_age if args.foreign_temp_age is not None
                        else config.janitor.foreign_temp_age if args.config is not None else DEFAULT_FOREIGN_TEMP_AGE)
    now = time.time()
    roots = list(dict.fromkeys([*config.replicas, *(os.path.abspath(root) for root in args.replicas)]))
    statuses = [guarded_status(root, now, foreign_temp_age) for root in roots]
    databases: list[DatabaseStatus] | None = None
    pools: list[PoolResources] = []
    if args.config is not None:
        databases = sorted(database_statuses(config.databases, now, foreign_temp_age), key=worst_first)
        pools = find_pools(args.config)
    shown = databases if databases is None or args.all or args.json else databases[:args.top]
    if args.deep and shown:
        redo_deep(shown, now, foreign_temp_age)
    if args.remote and shown:
        remotes = remote_replicas(config)
        for status in shown:
            if status.replica in remotes:
                status.remote = remote_status(status.replica, remotes[status.replica], now=now)
    if args.prometheus:
        registry = CollectorRegistry()
        registry.register(_Snapshot(statuses, databases, args.per_database))
        sys.stdout.write(generate_latest(registry).decode())
    elif args.json:
        document = status_document(statuses, now)
        if databases is not None:
            document.update(database_document(databases), resources=resources_document(pools))
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        parts = []
        if databases is not None and shown is not None:
            parts += [format_summary(databases), format_resources(pools), "",
                      format_databases(shown, len(databases), now)]
        if statuses:
            parts += ["", format_table(statuses, now)] if parts else [format_table(statuses, now)]
        print("\n".join(parts))
    unreadable = [status.unreadable for status in statuses if status.unreadable is not None]
    unreadable += [status.note or escape(status.replica) for status in databases or () if status.state == UNREADABLE]
    for cause in unreadable:
        print(f"ltxpool: error: {cause}", file=sys.stderr)
    return 1 if unreadable else 0
