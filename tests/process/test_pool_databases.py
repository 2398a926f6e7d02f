"""One pool replicates a whole folder of databases (issue 15): found, picked up, retired, never doubled.

Real ``ltxpool supervise`` processes over real SQLite databases written by
short-lived connections (each close checkpoints and deletes the WAL). The oracle
is the set of row ids each database was promised (``commit`` returned): every
restore must hold exactly those.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltxpool.cli import supervise
from ltxpool.replica.layout import Replica
from ltxpool.replicate import Replicator
from tests.process.test_supervisor import Pool, eventually
from tests.support.fault_counts import record
from tests.support.many_databases import Writers, commit_row, create_database, restored_ids, txid_problems


def dir_entry(source: Path, replicas: Path, notify: bool = True) -> str:
    return (f'\n[discovery]\nnotify = {str(notify).lower()}\n'
            f'\n[[databases]]\ndir = "{source}"\npattern = "*.db"\nrecursive = true\nreplica_root = "{replicas}"\n'
            f'interval = 0.2\n')


def folders(tmp_path: Path) -> tuple[Path, Path]:
    source, replicas = tmp_path / "tenants", tmp_path / "ltx"
    source.mkdir()
    replicas.mkdir(mode=0o755)
    return source, replicas


def replica_of(source: Path, replicas: Path, database: Path) -> str:
    return str(replicas / database.relative_to(source))


def has_snapshot(replica: str) -> bool:
    return os.path.isdir(os.path.join(replica, "ltx", "9")) and bool(os.listdir(os.path.join(replica, "ltx", "9")))


def wait_restores(expected: dict[Path, set[int]], source: Path, replicas: Path, timeout: float = 60.0) -> None:
    """Until every database's replica restores to exactly its committed ids (the pool caught up)."""
    pending = dict(expected)
    deadline = time.monotonic() + timeout
    while pending:
        for database in list(pending):
            if restored_ids(replica_of(source, replicas, database)) == pending[database]:
                del pending[database]
        assert not pending or time.monotonic() < deadline, (
            f"{len(pending)} replicas never caught up, e.g. {next(iter(pending))}")
        time.sleep(0.2)


def test_a_dir_entry_replicates_every_database_picks_up_new_ones_in_seconds_and_retires_deleted_ones(
    tmp_path: Path,
) -> None:
    """50 databases in nested folders, 10 created while the pool runs, 5 deleted.

    Control, same run: the pool without change notification (rescans only, every
    300 s) has not picked up a new database after the 5 s the protected pool is
    given; the protected pool picks up each within 5 s.
    """
    source, replicas = folders(tmp_path)
    committed: dict[Path, set[int]] = {}
    for index in range(50):
        database = source / f"t{index % 5}" / f"g{index % 3}" / f"app{index}.db"
        committed[database] = create_database(database, rows=index % 4 + 1)
    (source / "t0" / "notes.db").write_text("not a database")
    (source / "t1" / "app1.db-journal").write_bytes(b"")
    pool = Pool(tmp_path, [], extra_config=dir_entry(source, replicas))
    try:
        eventually(lambda: all(has_snapshot(replica_of(source, replicas, db)) for db in committed), timeout=60,
                   what="a first snapshot of all 50 databases", pool=pool)
        with Writers(list(committed)[:20], committed, pause=0.05):
            pickups = []
            for index in range(10):
                database = source / f"t{index % 5}" / "new" / f"late{index}.db"
                started = time.monotonic()
                committed[database] = create_database(database, rows=3)
                replica = replica_of(source, replicas, database)
                eventually(lambda replica=replica: has_snapshot(replica), timeout=5,
                           what=f"pick-up of {database}", pool=pool)
                pickups.append(time.monotonic() - started)
            gone = [source / f"t{index % 5}" / f"g{index % 3}" / f"app{index}.db" for index in range(45, 50)]
            for database in gone:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{database}{suffix}").unlink(missing_ok=True)
                del committed[database]
            for database in gone:
                pool.wait_for(rf"{re.escape(str(database))}: source gone \(deleted or moved away\); retired, "
                              rf"its replica kept", timeout=10)
            time.sleep(1)
        wait_restores(committed, source, replicas)
        assert pool.stop() == 0
    finally:
        pool.kill()
    for database in gone:
        assert has_snapshot(replica_of(source, replicas, database)), "a retired database's replica is kept"
    for database in committed:
        assert restored_ids(replica_of(source, replicas, database)) == committed[database], database
        assert txid_problems(replica_of(source, replicas, database)) == [], database
    assert not os.path.exists(os.path.join(replicas, "t0", "notes.db")), "a file that is not SQLite gets no replica"
    assert max(pickups) < 5.0
    record("pick-up seconds (max of 10)", round(max(pickups), 3))

    (tmp_path / "control").mkdir()
    control_source, control_replicas = folders(tmp_path / "control")
    create_database(control_source / "first.db")
    control = Pool(tmp_path / "control", [], name="control.toml",
                   extra_config=dir_entry(control_source, control_replicas, notify=False))
    try:
        eventually(lambda: has_snapshot(replica_of(control_source, control_replicas, control_source / "first.db")),
                   timeout=30, what="the control pool's first snapshot", pool=control)
        late = control_source / "late" / "late.db"
        create_database(late)
        time.sleep(5)
        assert not has_snapshot(replica_of(control_source, control_replicas, late)), (
            "without change notification the new database should not be picked up within 5 s")
    finally:
        control.kill()


def test_a_manual_replicate_and_the_pool_never_both_write_one_database(tmp_path: Path) -> None:
    """``supervise`` and ``ltxpool replicate`` of one database at once, an app committing throughout.

    One writes at a time: whichever comes second is told the replica is claimed and
    by whom. No TXID is written twice, none is missing, and the restore holds every
    committed row.
    """
    source, replicas = folders(tmp_path)
    database = source / "shop.db"
    committed = {database: create_database(database, rows=2)}
    replica = replica_of(source, replicas, database)
    pool = Pool(tmp_path, [], "--log-level", "debug", extra_config=dir_entry(source, replicas))
    manual_out = ""
    try:
        eventually(lambda: has_snapshot(replica), timeout=30, what="the pool's first snapshot", pool=pool)
        with Writers([database], committed, pause=0.01):
            for _ in range(3):
                manual = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "replicate", str(database), replica,
                                           "--interval", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True)
                time.sleep(2)
                manual.send_signal(signal.SIGTERM)
                out, _ = manual.communicate(timeout=30)
                manual_out += out
                time.sleep(1)
        wait_restores(committed, source, replicas)
        assert pool.stop() == 0
    finally:
        pool.kill()
    by_pool = [int(m.group(1)) for line in pool.lines if (m := re.search(r"shop\.db: txid (\d+): ", line))]
    by_manual = [int(m.group(1)) for m in re.finditer(r"^txid (\d+): ", manual_out, re.MULTILINE)]
    written = by_pool + by_manual
    assert by_pool and len(written) == len(set(written)), (by_pool, by_manual)
    assert txid_problems(replica) == []
    assert restored_ids(replica) == committed[database]
    manual_wrote = bool(by_manual)
    refused = "claim" in manual_out or any("claimed by another process" in line for line in pool.lines)
    assert manual_wrote or refused, manual_out
    record("manual replicate vs pool", 1, manual_wrote=manual_wrote, claimed=refused)


def test_without_the_claim_two_replicators_write_one_txid_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the claim: switched off, two replicators of one database write the same TXIDs,
    each over the other's file (a forked history; whether a restore then happens to
    come out right depends on which pages the two files share)."""
    from ltxpool.locks import claim as claim_module

    database = tmp_path / "shop.db"
    create_database(database)
    replica = tmp_path / "replica"
    first = Replicator(str(database), str(replica))
    first.step()
    with pytest.raises(Exception, match=r"another ltxpool process \(a replicate or a pool worker\) is writing"):
        Replicator(str(database), str(replica))

    @contextlib.contextmanager
    def always_mine(self: object) -> Iterator[bool]:
        yield True

    monkeypatch.setattr(claim_module.Claim, "held", always_mine)
    second = Replicator(str(database), str(replica))
    written = []
    for row in range(10, 16):
        commit_row(database, row)
        result = (first if row % 2 else second).step()
        assert result is not None
        written.append(result.txid)
    first.close()
    second.close()
    assert len(written) != len(set(written)), written


def test_sigkilled_workers_lose_and_duplicate_no_commit_across_20_databases(tmp_path: Path) -> None:
    """50 SIGKILLs of the pool's workers while 20 short-lived writers commit.

    The audit has teeth: the same check over a copy of one replica with one level-0
    file taken away finds the loss.
    """
    source, replicas = folders(tmp_path)
    committed = {source / f"t{i % 4}" / f"db{i}.db": set() for i in range(20)}
    for database in committed:
        committed[database] = create_database(database)
    pool = Pool(tmp_path, [], crash_loop_restarts=1000, extra_config=dir_entry(source, replicas))
    rng = random.Random(15)
    kills = 0
    try:
        eventually(lambda: all(has_snapshot(replica_of(source, replicas, db)) for db in committed), timeout=60,
                   what="first snapshots", pool=pool)
        with Writers(list(committed), committed, pause=0.03) as writers:
            while kills < 50:
                victim = pool.pid_of(f"worker-{rng.randrange(2)}")
                time.sleep(rng.uniform(0.05, 0.3))
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                kills += 1
                pool.wait_for(rf"\(pid {victim}\) died", timeout=15)
        assert not writers.errors, writers.errors[:3]
        wait_restores(committed, source, replicas, timeout=120)
        assert pool.stop() == 0
    finally:
        pool.kill()
    for database in committed:
        replica = replica_of(source, replicas, database)
        assert txid_problems(replica) == [], database
        assert restored_ids(replica) == committed[database], database
    record("worker SIGKILLs during writes", kills, databases=len(committed),
           commits=sum(len(ids) for ids in committed.values()))

    victim_db = next(iter(committed))
    copy = tmp_path / "tampered"
    subprocess.run(["cp", "-a", replica_of(source, replicas, victim_db), str(copy)], check=True)
    level0 = Replica(str(copy)).list_level(0).files
    middle = level0[len(level0) // 2]
    os.unlink(middle.path)
    # What compaction made of it would bridge the hole: only replication's own files stay.
    for level in (1, 2, 3, 9):
        for ltx in Replica(str(copy)).list_level(level).files:
            if level != 9 or ltx.max_txid >= middle.min_txid:
                os.unlink(ltx.path)
    assert txid_problems(str(copy)) != []
    assert restored_ids(str(copy)) != committed[victim_db]


def test_sighup_adds_an_entry_and_a_path_entry_is_replicated_once_its_database_appears(tmp_path: Path) -> None:
    """A ``path`` entry whose database does not exist yet, then a ``dir`` entry added by SIGHUP."""
    source, replicas = folders(tmp_path)
    app = source / "app.db"
    single = f'\n[[databases]]\npath = "{app}"\nreplica = "{replicas / "app"}"\ninterval = 0.2\n'
    pool = Pool(tmp_path, [], extra_config=single)
    try:
        pool.wait_for(r"worker-1 started")
        committed = create_database(app, rows=2)
        eventually(lambda: has_snapshot(str(replicas / "app")), timeout=5, what="the path entry's database", pool=pool)
        other = tmp_path / "other"
        other.mkdir()
        (tmp_path / "ltx-other").mkdir(mode=0o755)
        create_database(other / "x" / "late.db", rows=4)
        pool.config.write_text(pool.config.read_text()
                               + dir_entry(other, tmp_path / "ltx-other").replace("\n[discovery]\nnotify = true\n", ""))
        mark = len(pool.lines)
        pool.process.send_signal(signal.SIGHUP)
        pool.wait_for(r"SIGHUP: configuration reloaded", mark)
        eventually(lambda: has_snapshot(str(tmp_path / "ltx-other" / "x" / "late.db")), timeout=10,
                   what="the database of the entry added by SIGHUP", pool=pool)
        commit_row(app, 3)
        committed.add(3)
        eventually(lambda: restored_ids(str(replicas / "app")) == committed, timeout=10,
                   what="the commit after the reload", pool=pool)
        assert pool.stop() == 0
    finally:
        pool.kill()


def test_a_pool_whose_watches_would_not_fit_is_refused_at_start_naming_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """40 folders, 2 workers, a limit of 50 watches: refused before anything starts; control: with
    a limit of 100 000 the same config passes the check."""
    from ltxpool.cli import main
    from ltxpool.discovery import limits

    source, replicas = folders(tmp_path)
    for index in range(40):
        create_database(source / f"t{index}" / "app.db")
    config = tmp_path / "pool.toml"
    config.write_text(dir_entry(source, replicas))
    for limit, refused in ((50, True), (100_000, False)):
        monkeypatch.setattr(limits, "read_limit", lambda name, proc="/proc", limit=limit:
                            limit if name == "max_user_watches" else 128)
        if refused:
            assert main(["supervise", "--config", str(config)]) == 1
            error = capsys.readouterr().err
            assert "fs.inotify.max_user_watches is 50" in error and "sysctl fs.inotify.max_user_watches=" in error
            assert str(source) in error
        else:
            supervise.prepare(supervise_args(config))


def supervise_args(config: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    supervise.add_arguments(parser)
    return parser.parse_args(["--config", str(config)])
