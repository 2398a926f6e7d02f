"""A running replicate is a good neighbour to the app (real SQLite, the app in its own process).

Each protection is switched off in the same test (a control) to show the test can fail:
the app's TRUNCATE checkpoint, its switch out of WAL mode, a database that disappears
for a moment, and temp files a killed replicate left behind.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ltxpool.replica import Replica
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.restore import restore
from ltxpool.replica.status import replica_status
from ltxpool.replicate import loop as replicate_loop
from ltxpool.replicate.errors import SourceError
from ltxpool.replicate.loop import LoopEvent, replicate_continuously
from ltxpool.replicate.replicator import Replicator
from ltxpool.replicate.sqlite_source import SqliteSource

APP = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[3]), isolation_level=None)
started = time.monotonic()
try:
    result = conn.execute(sys.argv[2]).fetchone()
except sqlite3.OperationalError as exc:
    result = "error: " + str(exc)
print(time.monotonic() - started, result)
"""


def app(db: Path, sql: str, timeout: float = 5.0) -> tuple[float, str]:
    """Run one statement in a separate, short-lived app process: (seconds it took, result)."""
    done = subprocess.run([sys.executable, "-c", APP, str(db), sql, str(timeout)],
                          capture_output=True, text=True, timeout=60, check=True)
    seconds, result = done.stdout.split(" ", 1)
    return float(seconds), result.strip()


def make_database(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t(v) VALUES (randomblob(300))", [()] * 200)
    conn.close()


@contextmanager
def running(db: Path, replica: Path, interval: float = 0.1) -> Iterator[list[LoopEvent]]:
    events: list[LoopEvent] = []
    stop = threading.Event()
    with Replicator(db, replica, pin=True) as replicator:
        thread = threading.Thread(target=replicate_continuously, args=(replicator, interval, stop, events.append))
        thread.start()
        try:
            time.sleep(4 * interval)
            yield events
        finally:
            stop.set()
            thread.join(30)


def write_some(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=10)
    with conn:
        conn.executemany("INSERT INTO t(v) VALUES (randomblob(300))", [()] * 50)
    conn.close()


def test_the_apps_truncate_checkpoint_completes_while_replicate_is_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.db"
    make_database(db)
    holder = sqlite3.connect(db, isolation_level=None)  # keeps the WAL from being deleted between apps
    with running(db, tmp_path / "replica") as events:
        write_some(db)
        time.sleep(0.5)
        seconds, result = app(db, "PRAGMA wal_checkpoint(TRUNCATE)", timeout=3)
        assert result == "(0, 0, 0)" and seconds < 0.5, (seconds, result)
        assert any(e.kind == "yielded" for e in events)
    # Control: the same with the yield switched off waits for the app's whole busy timeout.
    monkeypatch.setattr(SqliteSource, "checkpointer_waiting", lambda self: False)
    with running(db, tmp_path / "replica"):
        write_some(db)
        time.sleep(0.5)
        seconds, result = app(db, "PRAGMA wal_checkpoint(TRUNCATE)", timeout=1.5)
        assert seconds >= 1.4 and result.startswith("(1,"), (seconds, result)
    holder.close()


def test_the_app_can_leave_wal_mode_once_replicate_has_been_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicate_loop, "IDLE_RELEASE", 0.3)
    db = tmp_path / "app.db"
    make_database(db)
    with running(db, tmp_path / "replica", interval=0.5):
        write_some(db)
        time.sleep(1.5)  # idle for longer than IDLE_RELEASE: connections held only during a step
        assert leave_wal_mode(db) == "('delete',)"
        app(db, "INSERT INTO t(v) VALUES (x'00')")  # a rollback-mode commit, replicated too
        time.sleep(1.0)
    out = tmp_path / "out.db"
    restore(Replica(tmp_path / "replica"), out)
    assert sqlite3.connect(out).execute("SELECT count(*) FROM t").fetchone() == (251,)
    # Control: holding the connections between idle steps makes the switch fail.
    monkeypatch.setattr(replicate_loop, "IDLE_RELEASE", math.inf)
    app(db, "PRAGMA journal_mode=wal")
    with running(db, tmp_path / "replica", interval=0.5):
        write_some(db)
        time.sleep(1.5)
        assert leave_wal_mode(db) == "error: database is locked"


def leave_wal_mode(db: Path) -> str:
    """As an app must: SQLite fails the switch at once (no busy handler) while another
    connection is open, so try a few times, 50 ms apart (a step takes a few ms)."""
    for _ in range(3):
        _, result = app(db, "PRAGMA journal_mode=delete")
        if not result.startswith("error"):
            break
        time.sleep(0.05)
    return result


def test_a_database_missing_for_a_moment_pauses_replicate_and_status_says_so(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_database(db)
    replica = tmp_path / "replica"
    with running(db, replica) as events:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{db}{suffix}"):
                os.rename(f"{db}{suffix}", f"{tmp_path}/away{suffix}")
        time.sleep(0.6)
        status = replica_status(Replica(replica), time.time())
        assert status.replicate_problem is not None
        assert status.replicate_problem.startswith("replicate (pid ")
        assert status.replicate_problem.endswith(f"{db}: stat database: No such file or directory [ENOENT]")
        assert [e.kind for e in events].count("problem") == 1, "reported once, not every step"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{tmp_path}/away{suffix}"):
                os.rename(f"{tmp_path}/away{suffix}", f"{db}{suffix}")
        write_some(db)
        time.sleep(0.6)
        assert any(e.kind == "recovered" for e in events)
        assert replica_status(Replica(replica), time.time()).replicate_problem is None
    out = tmp_path / "out.db"
    restore(Replica(replica), out)
    assert sqlite3.connect(out).execute("SELECT count(*) FROM t").fetchone() == (250,)
    # Control: a bare step (no loop around it) fails on the same missing database.
    with Replicator(db, replica) as replicator:
        os.rename(db, tmp_path / "gone.db")
        with pytest.raises(SourceError, match="No such file or directory"):
            replicator.step()


def test_replicate_removes_the_temp_files_a_killed_replicate_left_in_level_0(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_database(db)
    replica = tmp_path / "replica"
    level0 = replica / "ltx" / "0"
    level0.mkdir(parents=True)
    orphan = level0 / temp_name_for("0000000000000001-0000000000000001.ltx")
    orphan.write_bytes(b"half a file")
    foreign = level0 / "0000000000000002-0000000000000002.ltx.tmp"  # not ours: the janitor's business
    foreign.write_bytes(b"litestream's")
    with Replicator(db, replica):
        assert not orphan.exists()
        assert foreign.exists()
