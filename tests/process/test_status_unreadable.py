"""One replica whose files make the status code raise is reported unreadable; every other one still is.

The replica made to raise is a tenant's whose ``quarantine`` is a regular file (listing
it raises a QuarantineError; tests/unit/test_status_guard.py raises an exception of
no foreseen type). Controls in the same tests: the unguarded
``replica_status`` raises on it, and a scrape through the unguarded path is an HTTP
500 that reports no replica at all.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ltxpool.errors import LtxpoolError
from ltxpool.pool.metrics_server import MetricsServer
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.layout import Replica
from ltxpool.replica.status import StatusCollector, replica_status, status_metrics
from tests.support.helpers import run_ltxpool
from tests.support.synthetic import SyntheticStream

HUGE_PID = "9" * 150  # a pid no process can have, in a temp name a tenant planted


@pytest.fixture
def replicas(tmp_path: Path) -> tuple[list[str], str]:
    """Two healthy replicas (one holding a planted temp name with a huge pid) and one that raises."""
    good = []
    for name in ("a", "c"):
        stream = SyntheticStream(Replica(tmp_path / name), seed=len(good))
        stream.run(3)
        good.append(stream.replica.root)
    planted = temp_name_for("0000000000000009-0000000000000009.ltx").replace(f"-{os.getpid()}-", f"-{HUGE_PID}-")
    Path(Replica(good[0]).level_dir(0), planted).write_bytes(b"planted")
    bad = SyntheticStream(Replica(tmp_path / "b"), seed=9)
    bad.run(2)
    Path(bad.replica.quarantine_dir).write_bytes(b"a file where the quarantine folder belongs")
    return good, bad.replica.root


def _cause(bad: str) -> str:
    return f"{Replica(bad).quarantine_dir}: list quarantine folder: Not a directory [ENOTDIR]"


def test_the_table_json_and_prometheus_report_the_bad_replica_unreadable_and_the_others_in_full(
    replicas: tuple[list[str], str],
) -> None:
    good, bad = replicas
    with pytest.raises(LtxpoolError):  # control: the unguarded status of the bad replica raises
        replica_status(Replica(bad), time.time())
    roots = [good[0], bad, good[1]]

    table = run_ltxpool("status", *roots, timeout=30)
    assert table.returncode == 1
    assert table.stderr == f"ltxpool: error: {_cause(bad)}\n"
    lines = table.stdout.splitlines()
    level0 = {row[0]: row for row in (line.split() for line in lines[1:]) if len(row) == 11 and row[1] == "0"}
    assert sorted(level0) == sorted(good)
    assert all(level0[root][4:6] == ["1", "3"] for root in good)
    assert f"{bad}: unreadable: {_cause(bad)}" in lines

    document = run_ltxpool("status", "--json", *roots, timeout=30)
    assert document.returncode == 1
    by_root = {entry["root"]: entry for entry in json.loads(document.stdout)["replicas"]}
    assert by_root[bad]["unreadable"] == _cause(bad)
    for root in good:
        assert by_root[root]["unreadable"] is None
        assert by_root[root]["levels"][0]["max_txid"] == 3
    assert by_root[good[0]]["levels"][0]["temp_files"] == 1

    exposition = run_ltxpool("status", "--prometheus", *roots, timeout=30)
    assert exposition.returncode == 1
    samples = _samples(exposition.stdout)
    assert samples[("ltxpool_replica_readable", bad)] == 0
    for root in good:
        assert samples[("ltxpool_replica_readable", root)] == 1
        assert samples[("ltxpool_level_max_txid", root)] == 3
    assert not any(root == bad for name, root in samples if name != "ltxpool_replica_readable")


def _samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, replica) -> value, level 0 only for the per-level gauges."""
    return {(s.name, s.labels["replica"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.labels.get("level", "0") == "0" and "replica" in s.labels}


class _Unguarded(Collector):
    """The scrape without the per-replica guard: the status of every root, raised errors and all."""

    def __init__(self, roots: Sequence[str]) -> None:
        self._roots = roots

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return status_metrics([replica_status(Replica(root), time.time()) for root in self._roots])


def test_a_scrape_reports_the_bad_replica_unreadable_and_the_others_where_the_unguarded_scrape_fails(
    replicas: tuple[list[str], str],
) -> None:
    good, bad = replicas
    roots = [good[0], bad, good[1]]
    servers = []
    for collector in (StatusCollector(lambda: roots), _Unguarded(roots)):
        registry = CollectorRegistry()
        registry.register(collector)
        server = MetricsServer(registry, "127.0.0.1", 0)
        server.start()
        servers.append(server)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{servers[0].port}/metrics", timeout=10) as response:
            samples = _samples(response.read().decode())
        assert samples[("ltxpool_replica_readable", bad)] == 0
        for root in good:
            assert samples[("ltxpool_replica_readable", root)] == 1
            assert samples[("ltxpool_level_files", root)] == 3

        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://127.0.0.1:{servers[1].port}/metrics", timeout=10)
        assert failed.value.code == 500
        assert failed.value.read().decode() == f"metrics failed: {_cause(bad)}\n"
    finally:
        for server in servers:
            server.close()
