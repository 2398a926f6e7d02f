"""``ltxpool replicate`` as a user runs it: real processes, real signals, SIGKILL at random."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from tests.support.helpers import FORK, run_ltxpool
from tests.support.replicate_workload import CHANGES, Database, restored_bytes

PROGRESS = re.compile(r"^txid (\d+): (\d+) pages changed, (\d+) bytes( \(snapshot\))?$")
RESUMED = re.compile(r"^replicating .*: (?:empty replica|resumed at TXID (\d+)|replayed TXID \d+-(\d+) from level 0|rebuilt the state of TXID (\d+) from the replica)$")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ltxpool.cli", "replicate", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _ltx_paths(root: str) -> dict[str, str]:
    """Replicate's files by name: the snapshot at level 9, the changes at level 0."""
    paths = {}
    for level in (0, 9):
        directory = Replica(root).level_dir(level)
        if os.path.isdir(directory):
            paths.update({n: os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".ltx")})
    return paths


def _ltx_names(root: str) -> list[str]:
    return sorted(_ltx_paths(root))


def test_once_writes_a_snapshot_then_nothing_while_unchanged(tmp_path):
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    root = str(tmp_path / "replica")
    first = run_ltxpool("replicate", db.path, root, "--once")
    assert first.returncode == 0, first.stderr
    match = PROGRESS.match(first.stdout.strip())
    assert match and match.group(1) == "1" and match.group(4), first.stdout
    assert int(match.group(3)) == os.path.getsize(Replica(root).path_of(9, 1, 1)), "the snapshot is at level 9"
    second = run_ltxpool("replicate", db.path, root, "--once")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "no change since txid 1"
    assert _ltx_names(root) == [f"{1:016x}-{1:016x}.ltx"]
    CHANGES[3][1](db)
    third = run_ltxpool("replicate", db.path, root, "--once")
    match = PROGRESS.match(third.stdout.strip())
    assert match and match.group(1) == "2" and not match.group(4), third.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_loop_stops_cleanly_on_signal(tmp_path, signum):
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    process = _start(db.path, str(tmp_path / "replica"), "--interval", "0.05")
    assert process.stdout is not None
    assert process.stdout.readline().startswith("replicating ")
    assert PROGRESS.match(process.stdout.readline().strip())
    CHANGES[1][1](db)
    assert PROGRESS.match(process.stdout.readline().strip())
    process.send_signal(signum)
    assert process.wait(timeout=10) == 0
    assert process.stderr is not None and process.stderr.read() == ""


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ltxpool: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_database_is_one_line_error(tmp_path):
    missing = str(tmp_path / "nope.db")
    _one_line_error(run_ltxpool("replicate", missing, str(tmp_path / "r"), "--once"), missing, "no such database file")
    assert not os.path.exists(missing)


def test_non_sqlite_file_is_one_line_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database at all" * 100)
    _one_line_error(run_ltxpool("replicate", str(path), str(tmp_path / "r"), "--once"), str(path), "not a SQLite database")
    _one_line_error(run_ltxpool("replicate", str(tmp_path), str(tmp_path / "r"), "--once"), "not a regular file")


def test_unreadable_database_is_one_line_error(tmp_path, monkeypatch, capsys):
    """Root reads any file, so the kernel's EACCES is injected where the database is opened."""
    from ltxpool.cli import main
    from ltxpool.replicate import sqlite_source

    db = Database(str(tmp_path / "app.db"), "delete")
    CHANGES[0][1](db)
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path == db.path:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(sqlite_source.os, "open", refuse)
    code = main(["replicate", db.path, str(tmp_path / "r"), "--once"])
    captured = capsys.readouterr()
    _one_line_error(subprocess.CompletedProcess([], code, captured.out, captured.err), db.path, "Permission denied")


def test_unwritable_replica_is_one_line_error(tmp_path):
    file_replica = tmp_path / "replica-is-a-file"
    file_replica.write_text("x")
    db = Database(str(tmp_path / "ok.db"), "wal")
    CHANGES[0][1](db)
    _one_line_error(run_ltxpool("replicate", db.path, str(file_replica), "--once"), str(file_replica), "Not a directory")
    assert file_replica.read_text() == "x"


def _writer(path: str, stop, ready) -> None:  # type: ignore[no-untyped-def]
    """Commit transactions numbered 1, 2, 3, ... until told to stop; some grow, some shrink."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    rng = random.Random(os.getpid())
    seq = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    ready.set()
    while not stop.is_set():
        seq += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events(seq, body) VALUES (?, randomblob(?))", (seq, rng.randint(50, 3000)))
        if seq % 7 == 0:
            conn.execute("UPDATE events SET body = randomblob(100) WHERE seq % 11 = ?", (seq % 11,))
        if seq % 13 == 0:
            conn.execute("DELETE FROM events WHERE seq < ? AND seq % 4 = 0", (seq - 20,))
        conn.execute("COMMIT")
        time.sleep(rng.random() * 0.004)
    conn.close()


def _highest_seq(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, mode):
    """Half the kills land anywhere (start-up and reconciliation included), half while stepping.

    Every LTX name must be TXID t-t for t = 1..top, no file may ever change once
    named, the latest restore must equal the database, and the TXIDs around every
    restart must hold strictly newer databases one after the other.
    """
    db = Database(str(tmp_path / "app.db"), mode)
    db.run("CREATE TABLE events(id INTEGER PRIMARY KEY, seq INTEGER UNIQUE, body BLOB)")
    db.run("INSERT INTO events(seq, body) VALUES (?, randomblob(2000))", rows=[(-i,) for i in range(1, 600)])
    root = str(tmp_path / "replica")
    stop, ready = FORK.Event(), FORK.Event()
    writer = FORK.Process(target=_writer, args=(db.path, stop, ready), daemon=True)
    writer.start()
    written: dict[str, tuple[int, int]] = {}
    restarts: list[int] = []
    try:
        assert ready.wait(10)
        rng = random.Random(1)
        for round_ in range(12):
            process = _start(db.path, root, "--interval", "0.01")
            assert process.stdout is not None
            if round_ % 2:
                started = RESUMED.search(process.stdout.readline())
                assert started, "replicate did not start"
                restarts.append(int(next((g for g in started.groups() if g), 0)))
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                time.sleep(rng.uniform(0.0, 0.6))
            process.kill()
            process.wait(10)
            assert process.returncode == -signal.SIGKILL
            # An LTX file, once named, is never rewritten: a TXID written twice would show here.
            for name, path in _ltx_paths(root).items():
                st = os.stat(path)
                assert written.setdefault(name, (st.st_ino, st.st_size)) == (st.st_ino, st.st_size), name
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    final = run_ltxpool("replicate", db.path, root, "--once")
    assert final.returncode == 0, final.stderr
    names = _ltx_names(root)
    top = len(names)
    assert top > 10, "too few steps survived to prove anything"
    assert names == [f"{t:016x}-{t:016x}.ltx" for t in range(1, top + 1)], "a TXID was lost or duplicated"
    latest = str(tmp_path / "latest.db")
    assert restore(Replica(root), latest).txid == top
    assert restored_bytes(latest) == db.image()
    around = sorted({t for r in restarts for t in (r - 1, r, r + 1) if 1 <= t <= top} | {top})
    previous = -(10**9)
    for txid in around:
        out = str(tmp_path / f"at-{txid}.db")
        restore(Replica(root), out, txid)
        seq = _highest_seq(out)
        assert seq > previous, f"TXID {txid} does not hold a newer database than the TXID before it"
        previous = seq
    assert previous == _highest_seq(db.path)


@pytest.mark.parametrize("grace", ["10", "1000"], ids=["deadline", "control-no-deadline"])
def test_sigterm_during_a_step_that_waits_for_a_strangers_lock_exits_within_the_grace(
    tmp_path: Path, grace: str,
) -> None:
    """A stranger holds level 0's lock; the step waits (up to lock_timeout, 30 s). SIGTERM must
    not wait that out: the step is abandoned after STOP_GRACE and the process exits 0; the
    next run picks up and nothing committed is lost. Control: with no deadline worth the
    name, the process is still waiting 15 s after SIGTERM."""
    from ltxpool.locks.dirlock import lock_file_names
    from tests.support.many_databases import commit_row, create_database, restored_ids

    database = tmp_path / "app.db"
    committed = create_database(database, rows=3)
    replica = tmp_path / "replica"
    assert run_ltxpool("replicate", str(database), str(replica), "--once").returncode == 0
    level0 = replica / "ltx" / "0"
    level0.mkdir(exist_ok=True)
    holders = []
    for name in lock_file_names():
        gate = level0 / name
        os.close(os.open(gate, os.O_RDWR | os.O_CREAT, 0o600))
        holders.append(subprocess.Popen(["flock", "--close", str(gate), "sleep", "600"], start_new_session=True))
    time.sleep(0.5)
    commit_row(database, 4)
    committed.add(4)
    env = {**os.environ, "LTXPOOL_STOP_GRACE": grace}
    process = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "replicate", str(database), str(replica),
                                "--interval", "0.1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=15)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for holder in holders:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    if grace == "1000":
        assert not exited, "control: without the deadline the stop waits for the stranger's lock"
        return
    assert exited and process.returncode == 0, err
    assert "abandoned" in err
    assert run_ltxpool("replicate", str(database), str(replica), "--once").returncode == 0
    assert restored_ids(str(replica)) == committed
