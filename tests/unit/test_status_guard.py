"""Whatever the status code raises for one replica -- even a bug -- stays that replica's one-line problem."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import ltxpool.replica.status as status_module
from ltxpool.replica.layout import Replica
from ltxpool.replica.status import format_table, guarded_status, replica_status, status_metrics
from tests.support.synthetic import SyntheticStream


def test_any_exception_makes_only_its_replica_unreadable_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    roots = []
    for name in ("good", "buggy"):
        stream = SyntheticStream(Replica(tmp_path / name))
        stream.run(2)
        roots.append(stream.replica.root)
    good, buggy = roots
    real = status_module._recorded_problem

    def bug(replica: Replica) -> status_module.RecordedProblem | None:
        if replica.root == buggy:
            raise RuntimeError("unforeseen\n2026-01-01T00:00:00.000Z INFO forged record")
        return real(replica)

    monkeypatch.setattr(status_module, "_recorded_problem", bug)
    with pytest.raises(RuntimeError):  # control: unguarded, the bug escapes
        replica_status(Replica(buggy), time.time())

    statuses = [guarded_status(root, time.time()) for root in roots]
    assert statuses[0].unreadable is None and statuses[0].levels[0].max_txid == 2
    assert statuses[1].unreadable == "RuntimeError: unforeseen\\n2026-01-01T00:00:00.000Z INFO forged record"
    table = format_table(statuses, time.time()).splitlines()
    assert f"{buggy}: unreadable: {statuses[1].unreadable}" in table
    assert not any(line.startswith("2026-") for line in table)
    readable = {sample.labels["replica"]: sample.value for family in status_metrics(statuses)
                if family.name == "ltxpool_replica_readable" for sample in family.samples}
    assert readable == {good: 1, buggy: 0}
