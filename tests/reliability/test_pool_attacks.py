"""Attacks on the host pool (issue 15) by short-lived apps, a hostile tenant and a careless operator.

Real ``ltxpool supervise`` processes, real SQLite, real users. Each test is named after the
behaviour that must hold; a restore of the replica against what the app was promised
(``commit`` returned) is the oracle.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import INotify

from ltxpool.discovery import DatabaseDir
from ltxpool.discovery import watch as watch_module
from ltxpool.discovery.watch import DatabaseWatch
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.roles import _join
from ltxpool.pool.schedule import ReplicaSchedule
from ltxpool.pool.share import DatabaseShare
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from tests.process.test_pool_databases import folders
from tests.process.test_supervisor import Pool, eventually
from tests.support.users import SYSTEM_PYTHON, User, python_as, run_as, start_as


def dir_entry(source: Path, replicas: Path, interval: float = 0.1) -> str:
    return (f'\n[[databases]]\ndir = "{source}"\npattern = "*.db"\nrecursive = true\n'
            f'replica_root = "{replicas}"\ninterval = {interval}\n')


def rows(path: str) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT id, v FROM t"))
    finally:
        conn.close()


def restored_rows(replica: str) -> list[tuple[int, str]] | None:
    with tempfile.TemporaryDirectory() as work:
        output = os.path.join(work, "restored.db")
        try:
            restore(Replica(replica), output)
            return rows(output)
        except Exception:  # "not restorable (yet)" is an answer here
            return None


def write_database(path: Path, content: list[tuple[int, str]], mode: str = "wal", page_size: int = 4096) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute(f"PRAGMA journal_mode={mode}")
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT OR REPLACE INTO t(id, v) VALUES (?, ?)", content)
    finally:
        conn.close()


def test_a_database_recreated_at_its_path_replicates_the_new_content(tmp_path: Path) -> None:
    source, replicas = folders(tmp_path)
    database = source / "app.db"
    replica = str(replicas / "app.db")
    write_database(database, [(1, "first")])
    pool = Pool(tmp_path, [], extra_config=dir_entry(source, replicas))
    try:
        eventually(lambda: restored_rows(replica) == [(1, "first")], timeout=30, what="first", pool=pool)
        for round_ in range(8):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
            content = [(i, f"gen{round_}-{i}") for i in range(1, 2 + round_ % 3)]
            write_database(database, content, mode="wal" if round_ % 2 else "delete",
                           page_size=4096 if round_ % 4 < 2 else 8192)
            eventually(lambda: restored_rows(replica) == rows(str(database)), timeout=20,
                       what=f"round {round_}: restore == the recreated database", pool=pool)
        assert pool.stop() == 0
    finally:
        pool.kill()


HOLD_LOCKS = r"""
import fcntl, os, sys, time
root = sys.argv[1]
os.rename(os.path.join(root, "ltx"), os.path.join(root, "ltx.moved"))
held = []
for level in ("0", "9"):
    folder = os.path.join(root, "ltx", level)
    os.makedirs(folder)
    for name in [".ltxpool.lock"] + [f".ltxpool.slot-{i:02d}" for i in range(16)]:
        fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_tenant_holding_its_own_replicas_locks_does_not_stall_other_databases_of_its_worker(
    shared_tmp: str, tenant: User,
) -> None:
    """The tenant owns its replica root (the pool chowned it): it may put its own ``ltx/``
    there and hold every lock file of it. That may stall its own replica; the other
    database on the same worker must keep being replicated within seconds."""
    base = Path(shared_tmp)
    source, replicas = base / "tenants", base / "ltx"
    source.mkdir(mode=0o755)
    replicas.mkdir(mode=0o755)
    (source / "t").mkdir()
    os.chown(source / "t", tenant.uid, tenant.gid)
    own = source / "t" / "own.db"
    made = python_as(tenant, "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                             "c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)'); c.commit()", str(own))
    assert made.returncode == 0, made.stderr
    other = source / "o" / "other.db"
    other.parent.mkdir()
    write_database(other, [(1, "x")])
    own_replica, other_replica = str(replicas / "t" / "own.db"), str(replicas / "o" / "other.db")
    pool = Pool(base, [], "--workers", "1", extra_config=dir_entry(source, replicas, interval=0.1))
    holder = None
    try:
        eventually(lambda: restored_rows(other_replica) == [(1, "x")] and os.path.isdir(own_replica + "/ltx/0"),
                   timeout=30, what="both replicated", pool=pool)
        assert os.stat(own_replica).st_uid == tenant.uid, "the pool gave the tenant its replica root"
        holder = start_as(tenant, [SYSTEM_PYTHON, "-c", HOLD_LOCKS, own_replica, "120"])
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lags = []
        for row in range(2, 8):
            # The tenant writes its own database (its step waits for its locks) ...
            python_as(tenant, "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                              "c.execute('INSERT INTO t(v) VALUES (1)'); c.commit()", str(own))
            time.sleep(0.3)
            # ... while another database of the same worker commits.
            write_database(other, [(row, "x")])
            started = time.monotonic()
            eventually(lambda row=row: (restored_rows(other_replica) or [])[-1:] == [(row, "x")], timeout=60,
                       what=f"row {row} of the other database", pool=pool)
            lags.append(time.monotonic() - started)
        assert max(lags) < 5.0, f"the other database waited {max(lags):.1f} s behind the tenant's lock: {lags}"
        assert pool.stop() == 0
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        pool.kill()


@pytest.mark.parametrize("layout", ["two-dirs-one-replica-root", "file-replica-inside-replica-root",
                                    "replica-root-inside-another-dir"])
def test_entries_whose_replicas_meet_are_refused_at_start_in_one_line(tmp_path: Path, layout: str) -> None:
    """A careless operator gives two ``[[databases]]`` entries one replica tree: ``a/x.db`` and
    ``b/x.db`` would both be ``ltx/x.db``, and one of them would never be replicated (at run
    time only a "replica holds the history of ..." line, retried for ever)."""
    a, b, ltx, other = tmp_path / "a", tmp_path / "b", tmp_path / "ltx", tmp_path / "other"
    for folder in (a, b, ltx, other):
        folder.mkdir(mode=0o755)
    write_database(a / "x.db", [(1, "a")])
    write_database(b / "x.db", [(1, "b")])
    if layout == "two-dirs-one-replica-root":
        entries = dir_entry(a, ltx) + dir_entry(b, ltx)
    elif layout == "file-replica-inside-replica-root":
        entries = dir_entry(a, ltx) + f'\n[[databases]]\npath = "{b / "x.db"}"\nreplica = "{ltx / "x.db"}"\n'
    else:
        (b / "ltx").mkdir(mode=0o755)
        entries = dir_entry(a, b / "ltx") + dir_entry(b, other)
    config = tmp_path / "pool.toml"
    config.write_text("workers = 1\n" + entries)
    try:
        done = subprocess.run([sys.executable, "-m", "ltxpool.cli", "supervise", "--config", str(config)],
                              capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the pool started with two entries sharing one replica tree")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ("overlaps databases[0]" in lines[0] or "is inside databases[1].dir" in lines[0]), lines


class _Forgetful(list[Any]):
    """A control's stand-in for a collection the protection relies on: it keeps nothing added."""

    def append(self, item: Any) -> None:
        pass


class _Unforgetting(set[Any]):
    """A control's stand-in for a set the protection empties: it lets nothing go."""

    def discard(self, item: Any) -> None:
        pass


@pytest.mark.parametrize("reuse", [True, False], ids=["reuse", "control-no-reuse"])
def test_the_compaction_schedule_stays_as_big_as_the_live_replicas_under_database_churn(
    tmp_path: Path, reuse: bool,
) -> None:
    """Short-lived apps: 20,000 databases found and retired (unique names, and one name
    again and again), as ``worker_main`` joins and retires their replicas. The schedule
    must hold slots for the replicas alive, not for every one ever seen (~400 bytes each).
    Control: with retired slots never given out again, it holds one per database seen."""
    schedule = ReplicaSchedule([], PoolConfig().compaction)
    if not reuse:
        schedule._free = _Forgetful()
    positions: dict[str, int] = {}
    live = str(tmp_path / "live.db")
    _join(schedule, positions, live, 0.0, {})
    for index in range(20_000):
        root = str(tmp_path / ("again.db" if index % 2 else f"job-{index}.db"))
        _join(schedule, positions, root, float(index), {})
        schedule.retire(positions.pop(root))
    if not reuse:
        assert len(schedule.replicas) == 20_001, "control: a slot for every database ever seen"
        return
    assert len(schedule.replicas) <= 2, f"{len(schedule.replicas)} slots for 1 live replica"
    assert schedule.replicas[positions[live]].root == live
    # A slot given out again is planned for its new replica, and only for it.
    again = str(tmp_path / "again.db")
    _join(schedule, positions, again, 0.0, {})
    assert schedule.replicas[positions[again]].root == again and positions[again] != positions[live]


def test_journal_mode_switches_a_vacuum_to_a_new_page_size_and_a_big_commit_are_all_replicated(
    tmp_path: Path,
) -> None:
    """One database, kept open and closed by short-lived connections: wal -> delete -> wal,
    ``VACUUM`` to 8 KiB pages, a 200,000-row commit while the pool steps."""
    source, replicas = folders(tmp_path)
    database = source / "app.db"
    replica = str(replicas / "app.db")
    write_database(database, [(1, "first")])
    pool = Pool(tmp_path, [], extra_config=dir_entry(source, replicas))

    def caught_up(what: str) -> None:
        eventually(lambda: restored_rows(replica) == rows(str(database)), timeout=60, what=what, pool=pool)

    try:
        caught_up("first")
        for step, mode in enumerate(("delete", "wal", "delete", "wal")):
            conn = sqlite3.connect(database)
            conn.execute(f"PRAGMA journal_mode={mode}")
            with conn:
                conn.execute("INSERT INTO t(v) VALUES (?)", (f"{mode}-{step}",))
            conn.close()
            caught_up(f"after switching to {mode}")
        conn = sqlite3.connect(database)
        conn.execute("PRAGMA journal_mode=delete")
        conn.execute("PRAGMA page_size=8192")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode=wal")
        with conn:
            conn.execute("INSERT INTO t(v) VALUES ('after vacuum')")
        conn.close()
        assert sqlite3.connect(database).execute("PRAGMA page_size").fetchone() == (8192,)
        caught_up("after VACUUM to 8 KiB pages")
        conn = sqlite3.connect(database)
        with conn:
            conn.executemany("INSERT INTO t(v) VALUES (?)", ((f"bulk-{i}",) for i in range(200_000)))
            conn.execute("DELETE FROM t WHERE id % 7 = 0")
        conn.close()
        caught_up("after a 200,000-row commit")
        assert pool.stop() == 0
    finally:
        pool.kill()


def test_a_folder_removed_and_recreated_again_and_again_has_its_new_database_replicated(tmp_path: Path) -> None:
    source, replicas = folders(tmp_path)
    folder = source / "t" / "app"
    pool = Pool(tmp_path, [], extra_config=dir_entry(source, replicas))
    try:
        pool.wait_for(r"worker-1 started")
        time.sleep(1)
        for round_ in range(30):
            # The pool's step may open the database (its -wal, -shm) while the folder goes:
            # remove until it is gone, as an app's deploy script would.
            while (source / "t").exists():
                shutil.rmtree(source / "t", ignore_errors=True)
            folder.mkdir(parents=True)
            write_database(folder / "x.db", [(round_, f"r{round_}")])
            if round_ % 10 == 9:
                eventually(lambda: restored_rows(str(replicas / "t" / "app" / "x.db")) == rows(str(folder / "x.db")),
                           timeout=10, what=f"round {round_}", pool=pool)
        assert pool.stop() == 0
    finally:
        pool.kill()


@pytest.mark.parametrize(("limit", "polling"), [("kernel-limit", True), ("budget", True),
                                               ("kernel-limit", False)],
                         ids=["kernel-limit", "budget", "control-no-polling"])
def test_a_tenant_making_many_folders_does_not_delay_finding_another_tenants_new_database(
    shared_tmp: str, tenant: User, monkeypatch: pytest.MonkeyPatch, limit: str, polling: bool,
) -> None:
    """``fs.inotify.max_user_watches`` is per user: root's pool shares it with every root
    process, and each worker spends one watch per folder of the tree. The tenant makes 60
    folders in its own sub-folder, past what the watcher may hold: the kernel's limit
    (``add_watch`` fails ENOSPC beyond 43 watches, as the kernel does), or the watcher's
    own budget of 43 (then the kernel's limit is never reached: the quarter the pool leaves
    stays for root's other services). Another tenant's new folder cannot be watched; its
    new database is still found within the 5 s the pool promises, by polling.

    Controls, same run: without a budget the tenant's folders take a watch each, without
    end; without the polling of unwatched folders the new database is not found in 5 s
    (only the rescan, minutes later, would).
    """
    base = Path(shared_tmp)
    source = base / "tenants"
    (source / "evil").mkdir(parents=True)
    (source / "other").mkdir()
    os.chown(source / "evil", tenant.uid, tenant.gid)
    real_add = INotify.add_watch
    held: set[int] = set()

    def add_watch(self: INotify, path: str, mask: int) -> int:
        if len(held) >= 43:
            raise OSError(28, "No space left on device")
        wd = real_add(self, path, mask)
        held.add(wd)
        return wd

    if limit == "kernel-limit":
        monkeypatch.setattr(INotify, "add_watch", add_watch)
    if not polling:
        monkeypatch.setattr(watch_module, "POLL_INTERVAL", math.inf)
    entry = DatabaseDir(str(source), str(base / "ltx"), recursive=True)
    watch = DatabaseWatch([entry], budget=43 if limit == "budget" else None)
    unbounded = DatabaseWatch([entry])
    try:
        watch.start()
        unbounded.start()
        made = run_as(tenant, ["sh", "-c", f"cd '{source}/evil' && for i in $(seq 60); do mkdir d$i; done"])
        assert made.returncode == 0, made.stderr
        time.sleep(0.2)
        watch.read()
        unbounded.read()
        (source / "other" / "new").mkdir()
        time.sleep(0.2)
        watch.read()  # the new folder: listed (empty), but it gets no watch
        write_database(source / "other" / "new" / "shop.db", [(1, "x")])
        created = time.monotonic()
        found: list[str] = []
        while not found and time.monotonic() - created < 5:
            time.sleep(0.1)
            found = [target.database for target in watch.read().added]
        if found:
            # A write there is seen by the poll too (no event would tell).
            time.sleep(0.05)
            write_database(source / "other" / "new" / "shop.db", [(2, "y")])
            written = time.monotonic()
            changed: set[str] = set()
            while not changed and time.monotonic() - written < 5:
                time.sleep(0.1)
                changed = set(watch.read().changed)
            assert changed == {found[0]}
        assert watch.watches <= 43 and watch.unwatched >= 18
        if limit == "budget":
            assert unbounded.watches == 63, "control: without a budget every folder takes a watch"
    finally:
        watch.close()
        unbounded.close()
    assert found == ([str(source / "other" / "new" / "shop.db")] if polling else [])


@pytest.mark.parametrize("forget", [True, False], ids=["forget", "control-keep"])
def test_a_worker_keeps_nothing_of_databases_deleted_before_their_first_step(tmp_path: Path, forget: bool) -> None:
    """Short-lived apps with a database per job: 300 created and deleted between two looks
    of the worker. Nothing of them may stay in the worker's share once they are retired.
    Control: a share that lets go of a path only at its first successful step keeps all 300."""
    source, replicas = folders(tmp_path)
    share = DatabaseShare(PoolConfig(databases=(DatabaseDir(str(source), str(replicas)),), workers=1), 0)
    if not forget:
        share._maybe_problem = _Unforgetting()
    try:
        share.start(0.0, {})
        for batch in range(3):
            made = [source / f"job-{batch}-{i}.db" for i in range(100)]
            for path in made:
                write_database(path, [(1, "x")], mode="delete")
            share.absorb(1.0)
            for path in made:
                path.unlink()
            share.absorb(2.0)
        assert len(share.queue) == 0
        if not forget:
            assert len(share._maybe_problem) == 300, "control: every deleted database's path kept"
            return
        assert len(share._maybe_problem) == 0, f"{len(share._maybe_problem)} paths of deleted databases kept"
    finally:
        share.close()
