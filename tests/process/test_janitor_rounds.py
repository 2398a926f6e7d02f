"""The janitor's round costs what changed: idle replicas cost an lstat per level, and no change is missed.

Real replicas on disk, the real ``janitor_main`` loop in this process with a stand-in
link (``RoundsLink``); ``DirLock`` constructions counted (each opens its directory
and 17 lock files). Each test has its control in it: the memory disabled, or the
racy rule switched off.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from ltxpool.discovery import DatabaseDir
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.roles import janitor_main
from ltxpool.pool.supervisor import remove_orphans
from ltxpool.replica import directory as directory_module
from ltxpool.replica import janitor_memory
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.directory import DirectoryStamp
from ltxpool.replica.janitor_memory import JanitorMemory
from ltxpool.replica.layout import Replica, format_name
from ltxpool.replica.quarantine import quarantined_files
from tests.support.helpers import RoundsLink, count_locks
from tests.support.synthetic import SyntheticStream

LEVELS_BUILT = 2  # ltx/0 and ltx/1


def template(base: Path) -> Path:
    """One replica: six level-0 files and their level-1 compaction."""
    root = base / "template"
    SyntheticStream(Replica(root), seed=3).run(6)
    assert compact_level(Replica(root), 1) is not None
    return root


def idle_replicas(base: Path, count: int) -> list[str]:
    """``count`` copies of the template, then past the racy second: a janitor would find them idle."""
    source = template(base)
    roots = []
    for index in range(count):
        root = base / "replicas" / f"r{index:04d}"
        shutil.copytree(source, root, symlinks=True)
        roots.append(str(root))
    time.sleep(1.1)
    return roots


def test_a_second_round_over_300_idle_replicas_builds_no_lock_and_costs_a_fraction_of_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    roots = idle_replicas(tmp_path, 300)
    config = PoolConfig(replicas=tuple(roots), janitor_interval=0.0)
    locks = count_locks(monkeypatch)
    runs = {}
    for enabled in (True, False):
        runs[enabled] = link = RoundsLink(3, locks=locks)
        janitor_main(link, config, {}, memory=JanitorMemory(enabled=enabled))
    remembered, control = runs[True], runs[False]
    every = 300 * LEVELS_BUILT
    assert remembered.locks_per_round == [every, 0, 0]
    assert [(r.examined, r.unchanged, r.replicas) for r in remembered.round_events] == [
        (every, 0, 300), (0, every, 300), (0, every, 300)]
    # Control: without the memory every round builds every lock again.
    assert control.locks_per_round == [every, every, every]
    assert [(r.examined, r.unchanged) for r in control.round_events] == [(every, 0)] * 3
    first, later = remembered.round_events[0].seconds, remembered.round_events[1].seconds
    assert later < first / 5, (first, later)
    assert later < control.round_events[1].seconds / 5, (later, control.round_events[1].seconds)


def test_after_an_idle_round_an_orphan_a_corrupt_file_and_an_expired_file_are_each_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = template(tmp_path)
    names = ["orphan", "corrupt", "expired", "untouched"]
    replicas = {}
    for name in names:
        shutil.copytree(source, tmp_path / name, symlinks=True)
        replicas[name] = Replica(tmp_path / name)
    # "expired": its level-1 file reaches level 0's retention age (300 s) in 3 s.
    covering = replicas["expired"].list_level(1).files[0]
    ripe_at = time.time() + 3.0
    os.utime(covering.path, (ripe_at - 300, ripe_at - 300))
    time.sleep(1.1)
    orphan = Path(replicas["orphan"].level_dir(0)) / temp_name_for(format_name(7, 7))
    corrupt_dir = Path(replicas["corrupt"].level_dir(1))
    corrupt = corrupt_dir / format_name(7, 12)
    seen: dict[str, os.stat_result] = {}

    def between(rounds_done: int) -> None:
        if rounds_done != 2:
            return
        orphan.write_bytes(b"left by a writer killed mid-write")
        seen["before"] = os.stat(corrupt_dir)
        corrupt.write_bytes(Path(covering.path).read_bytes()[:-7])
        # Set the directory's mtime back to what the memory recorded: an mtime check alone is fooled.
        os.utime(corrupt_dir, ns=(seen["before"].st_atime_ns, seen["before"].st_mtime_ns))
        seen["after"] = os.stat(corrupt_dir)
        time.sleep(max(ripe_at + 0.2 - time.time(), 0.0))

    config = PoolConfig(replicas=tuple(r.root for r in replicas.values()), janitor_interval=0.0)
    locks = count_locks(monkeypatch)
    link = RoundsLink(3, between=between, locks=locks)
    janitor_main(link, config, {})

    before, after = seen["before"], seen["after"]
    assert (after.st_dev, after.st_ino, after.st_mtime_ns) == (before.st_dev, before.st_ino, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns, "utime cannot set the ctime back: that is what catches it"
    assert [(r.examined, r.unchanged) for r in link.round_events] == [
        (4 * LEVELS_BUILT, 0), (0, 4 * LEVELS_BUILT), (3 * LEVELS_BUILT, LEVELS_BUILT)]
    assert link.locks_per_round == [4 * LEVELS_BUILT, 0, 3 * LEVELS_BUILT]
    assert link.reports(1) == []
    found = {Path(r.replica).name: (r.orphans_removed, r.quarantined, r.retention_removed)
             for r in link.reports(2)}
    # Level 1 holds TXIDs 2-6 (it starts after the first transaction, the snapshot): 2-5 go, 6 is newest.
    assert found == {"orphan": (1, 0, 0), "corrupt": (0, 1, 0), "expired": (0, 0, 4)}
    assert not orphan.exists() and not corrupt.exists()
    assert quarantined_files(replicas["corrupt"]) == [f"1-{corrupt.name}"]
    assert [f.min_txid for f in replicas["expired"].list_level(0).files] == [1, 6]
    assert len(replicas["untouched"].list_level(0).files) == 6


@pytest.mark.parametrize("racy_rule", [True, False], ids=["racy-rule", "control-no-racy-rule"])
def test_a_change_in_the_clock_tick_of_the_listing_is_found_next_round_on_a_one_second_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, racy_rule: bool,
) -> None:
    """A filesystem with 1-second timestamps (ext3, and what coarse ticks look like), simulated by
    truncating every stamp and every look to the second: a file planted right after the listing, in
    the second of the change just before it, leaves the directory's stamp as it was."""
    def coarse(ns: int) -> int:
        return ns - ns % 1_000_000_000

    def coarse_stamp(st: os.stat_result, taken_ns: int) -> DirectoryStamp:
        return DirectoryStamp(st.st_dev, st.st_ino, coarse(st.st_mtime_ns), coarse(st.st_ctime_ns), taken_ns)

    real_look = janitor_memory._look

    def coarse_look(path: str) -> object:
        key = real_look(path)
        return key if not isinstance(key, tuple) else (*key[:2], coarse(key[2]), coarse(key[3]))

    monkeypatch.setattr(DirectoryStamp, "of", staticmethod(coarse_stamp))
    monkeypatch.setattr(janitor_memory, "_look", coarse_look)
    if not racy_rule:
        monkeypatch.setattr(directory_module, "RACY_NS", 0)
    real_list_level = Replica.list_level

    def attempt(base: Path) -> tuple[bool, RoundsLink, Path]:
        """One run: the change, the listing and the plant within one second (the premise), or False."""
        base.mkdir()
        root = template(base)
        replica = Replica(root)
        level0 = Path(replica.level_dir(0))
        good = replica.list_level(1).files[0]
        planted = level0 / format_name(7, 7)
        armed = [True]
        same_second: list[bool] = []

        def list_level(self: Replica, level: int):  # noqa: ANN202 - the real method's type
            if not (armed[0] and level == 0):
                return real_list_level(self, level)
            armed[0] = False
            if time.time() % 1 > 0.5:  # keep the change, the listing and the plant within one second
                time.sleep(1 - time.time() % 1)
            (level0 / ".a-new-entry").write_bytes(b"")  # a change just before the listing (no listing sees dotfiles)
            listing = real_list_level(self, level)
            planted.write_bytes(Path(good.path).read_bytes()[:-7])  # and one just after: unseen this round
            assert listing.stamp is not None
            same_second.append(coarse(os.stat(level0).st_ctime_ns) == listing.stamp.ctime_ns)
            return listing

        time.sleep(1.1)
        monkeypatch.setattr(Replica, "list_level", list_level)
        link = RoundsLink(2)
        try:
            janitor_main(link, PoolConfig(replicas=(str(root),), janitor_interval=0.0), {})
        finally:
            monkeypatch.setattr(Replica, "list_level", real_list_level)
        return same_second == [True], link, planted

    # A stalled machine can push the plant into the next second; then the run proves
    # nothing either way and is made again (at most 5 times).
    for tries in range(5):
        premise, link, planted = attempt(tmp_path / f"try{tries}")
        if premise:
            break
    assert premise, "premise: the plant came in the second of the listing in none of 5 runs (a stalled machine?)"
    assert link.reports(0) == [], "the first round did not see the planted file"
    caught = [r.quarantined for r in link.reports(1)]
    if racy_rule:
        assert caught == [1] and not planted.exists()
        assert link.round_events[1].examined == LEVELS_BUILT
    else:
        assert caught == [] and planted.exists(), "control: without the racy rule the change is missed"
        assert link.round_events[1].unchanged == LEVELS_BUILT


def make_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t(x)")
    connection.close()


def test_the_replicas_of_databases_entries_are_cleaned_by_the_janitor_and_the_stop_sweep(tmp_path: Path) -> None:
    databases, replica_root = tmp_path / "dbs", tmp_path / "ltx"
    databases.mkdir()
    replica_root.mkdir()
    for name in ("a.db", "b.db", "no-replica-yet.db"):
        make_database(databases / name)
    orphans = {}
    for name in ("a.db", "b.db", "no-database.db"):
        replica = Replica(replica_root / name)
        SyntheticStream(replica, seed=len(orphans)).run(2)
        orphans[name] = Path(replica.level_dir(0)) / temp_name_for(format_name(9, 9))
    entry = DatabaseDir(str(databases), str(replica_root))
    config = PoolConfig(databases=(entry,), janitor_interval=0.0)

    def plant() -> None:
        for orphan in orphans.values():
            orphan.write_bytes(b"orphan")

    plant()
    memory = JanitorMemory()
    link = RoundsLink(1)
    janitor_main(link, config, {}, memory=memory)
    assert not orphans["a.db"].exists() and not orphans["b.db"].exists()
    # Control: a replica whose database is not there is not the pool's to clean.
    assert orphans["no-database.db"].exists()
    assert not (replica_root / "no-replica-yet.db").exists(), "the janitor creates no replica"
    assert sorted(Path(r.replica).name for r in link.reports(0)) == ["a.db", "b.db"]

    plant()
    assert remove_orphans(config) == 2
    assert not orphans["a.db"].exists() and orphans["no-database.db"].exists()

    # A database that goes takes its replica's memory along.
    time.sleep(1.1)
    janitor_main(RoundsLink(1), config, {}, memory=memory)
    assert len(memory) == 2
    (databases / "b.db").unlink()
    link = RoundsLink(1)
    janitor_main(link, config, {}, memory=memory)
    assert len(memory) == 1 and link.round_events[0].replicas == 1
