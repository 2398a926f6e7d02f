"""Crash chaos: replicate, four workers, the janitor and the supervisor SIGKILLed at random.

The run and its audit are ``ltxpool.proving.chaos`` / ``ltxpool.proving.chaos_audit`` (also behind
``ltxpool stress --chaos``). Both runs are part of the default suite: a short one and
a long one (at least 300 kills), marked ``long`` so that ``-m "not long"`` can leave
it out of a quick local run.

A passing audit proves something only if the kills really happened and some landed
mid-write, so both are asserted; and ``test_the_audit_finds_...`` is the control:
each kind of damage the chaos could cause, planted by hand, is reported by the audit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import ltxpool.proving.chaos_audit as chaos_audit
from ltxpool.cli import main as cli_main
from ltxpool.locks.dirlock import DirLock
from ltxpool.proving.chaos import ChaosConfig, ChaosReport, run_chaos
from ltxpool.proving.chaos_audit import audit
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.layout import Replica
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.helpers import run_ltxpool

SHORT_SECONDS = 8.0
LONG_SECONDS = 30.0


def assert_chaos_was_real_and_harmless(report: ChaosReport, min_kills: int) -> None:
    assert report.problems == [], "\n".join(report.problems) + f"\n(scratch: {report.directory})"
    assert report.total_kills >= min_kills, report.kills
    assert report.unconfirmed_kills == 0
    for kind in ("worker", "janitor", "replicate", "supervisor"):
        assert report.kills.get(kind, 0) > 0, f"no {kind} was killed: {report.kills}"
    assert report.kills_mid_write > 0, "no kill landed mid-write: the writers' crash paths were not exercised"
    assert report.latest_txid > 20
    assert all(report.compactions.get(level, 0) > 0 for level in (1, 2, 3, 9)), report.compactions


def test_short_chaos_leaves_no_partial_file_no_orphan_no_lock_no_gap_and_restores_the_source(tmp_path: Path) -> None:
    report = run_chaos(ChaosConfig(directory=str(tmp_path / "chaos"), seconds=SHORT_SECONDS, seed=8), cli_main)
    record("chaos (short): SIGKILLs", report.total_kills, by_role=report.kills, mid_write=report.kills_mid_write,
           txids=report.latest_txid, compactions=report.compactions, seconds=round(report.seconds, 1))
    assert_chaos_was_real_and_harmless(report, min_kills=60)


@pytest.mark.long
def test_long_chaos_of_at_least_300_kills_leaves_the_replica_whole(tmp_path: Path) -> None:
    # Kills, not seconds, are what the test is about: a loaded machine restarts slower, so
    # it goes on (up to four times as long) until the 300 are done.
    report = run_chaos(ChaosConfig(directory=str(tmp_path / "chaos"), seconds=LONG_SECONDS, seed=300,
                                   min_kills=300, max_seconds=4 * LONG_SECONDS), cli_main)
    record("chaos (long): SIGKILLs", report.total_kills, by_role=report.kills, mid_write=report.kills_mid_write,
           txids=report.latest_txid, compactions=report.compactions, seconds=round(report.seconds, 1))
    assert_chaos_was_real_and_harmless(report, min_kills=300)


def test_stress_chaos_command_runs_the_same_and_reports_it(tmp_path: Path) -> None:
    done = run_ltxpool("stress", "--chaos", "--seconds", "3", "--seed", "5", "--json", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == [] and report["total_kills"] > 10, report
    assert os.listdir(tmp_path) == [], "a passing run removes its scratch directory"
    text = run_ltxpool("stress", "--chaos", "--seconds", "2", "--dir", str(tmp_path))
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith("Chaos for ") and "SIGKILLs" in text.stdout
    assert "Audit: every final name verifies" in text.stdout
    record("chaos (ltxpool stress --chaos): SIGKILLs", report["total_kills"], by_role=report["kills"])


# --- the control: the audit sees each kind of damage ----------------------------------------

def healthy_replica(tmp_path: Path) -> tuple[Replica, str]:
    database = str(tmp_path / "app.db")
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=wal")
    connection.execute("CREATE TABLE t(x)")
    replica = Replica(tmp_path / "replica")
    with Replicator(database, replica) as replicator:
        for _ in range(4):
            connection.execute("INSERT INTO t VALUES (randomblob(3000))")
            replicator.step()
    connection.close()
    return replica, database


def hold_lock(directory: str, ready, release) -> None:  # noqa: ANN001 - events from tests.support.helpers.Child
    with DirLock(directory) as lock, lock.writing():
        ready.set()
        release.wait(30)


def damage(kind: str, replica: Replica, child) -> None:  # noqa: ANN001
    level0 = Path(replica.level_dir(0))
    newest = max(level0.glob("*.ltx"))
    if kind == "partial file under a final name":
        newest.write_bytes(newest.read_bytes()[:-30])
    elif kind == "orphan the janitor cannot remove":
        # A temp file the janitor does not recognise as ours (and is too young to be foreign).
        (level0 / f"{newest.name}.tmp").write_bytes(b"half")
    elif kind == "lock held":
        child(hold_lock, str(level0)).wait_ready()
    elif kind == "gap":
        sorted(level0.glob("*.ltx"))[1].unlink()
    elif kind == "quarantined during the run":
        Path(replica.quarantine_dir).mkdir()
        (Path(replica.quarantine_dir) / f"0-{newest.name}").write_bytes(b"x")


EXPECTED = {
    "partial file under a final name": "not a complete file under a final name",
    "orphan the janitor cannot remove": "temp files left after one janitor round",
    "lock held": "directory lock still held",
    "gap": "held by no file",
    "quarantined during the run": "quarantined",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_the_audit_finds_each_kind_of_damage_a_crash_could_cause(tmp_path: Path, kind: str, child) -> None:  # noqa: ANN001
    replica, database = healthy_replica(tmp_path)
    assert audit(replica, database, str(tmp_path / "clean.db")).problems == []
    damage(kind, replica, child)
    problems = audit(replica, database, str(tmp_path / "damaged.db")).problems
    assert [p for p in problems if EXPECTED[kind] in p], problems


def test_the_audit_finds_a_restore_that_differs_from_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replica, database = healthy_replica(tmp_path)
    real_restore = chaos_audit.restore

    def restore_then_flip_a_byte(replica: Replica, output: str) -> object:
        result = real_restore(replica, output)
        with open(output, "r+b") as restored:
            restored.seek(5000)
            byte = restored.read(1)
            restored.seek(5000)
            restored.write(bytes([byte[0] ^ 1]))
        return result

    monkeypatch.setattr(chaos_audit, "restore", restore_then_flip_a_byte)
    problems = audit(replica, database, str(tmp_path / "out.db")).problems
    assert [p for p in problems if "differs from" in p], problems


def test_an_orphan_left_by_a_killed_writer_is_what_the_audit_counts(tmp_path: Path) -> None:
    replica, database = healthy_replica(tmp_path)
    orphan = Path(replica.level_dir(0)) / temp_name_for("0000000000000009-0000000000000009.ltx")
    orphan.write_bytes(b"half")
    result = audit(replica, database, str(tmp_path / "out.db"))
    assert result.problems == [] and result.orphans_at_end == 1 and not orphan.exists()
    assert result.latest_txid == 4 and result.files_verified >= 4
