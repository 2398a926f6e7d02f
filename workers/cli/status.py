"""``ltxpool status``: per replica and level, what is there and what is wrong."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ltxpool.cli.argtypes import seconds
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
    "quarantined files, age of the newest file. Reads only; takes no lock. "
    "A replica that cannot be read is reported as unreadable (exit 1); the others still are."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replicas", nargs="+", metavar="REPLICA", help="replica root directories")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--prometheus", action="store_true", help="print Prometheus text exposition format")
    parser.add_argument("--foreign-temp-age", type=seconds, default=DEFAULT_FOREIGN_TEMP_AGE, metavar="SECONDS",
                        help="another tool's *.tmp older than this counts as an orphan (default 3600)")


class _Snapshot(Collector):
    """Statuses already gathered, as gauges."""

    def __init__(self, statuses: list[ReplicaStatus]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        return status_metrics(self._statuses)


def run(args: argparse.Namespace) -> int:
    now = time.time()
    statuses = [guarded_status(root, now, args.foreign_temp_age) for root in args.replicas]
    if args.prometheus:
        registry = CollectorRegistry()
        registry.register(_Snapshot(statuses))
        sys.stdout.write(generate_latest(registry).decode())
    elif args.json:
        print(json.dumps(status_document(statuses, now), indent=2, sort_keys=True))
    else:
        print(format_table(statuses, now))
    unreadable = [status.unreadable for status in statuses if status.unreadable is not None]
    for cause in unreadable:
        print(f"ltxpool: error: {cause}", file=sys.stderr)
    return 1 if unreadable else 0
