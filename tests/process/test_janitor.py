"""The janitor's temp-file sweep: orphans go, in-flight writes are never touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ltxpool.locks.dirlock import DirLock
from ltxpool.replica.atomic import AtomicWriter, is_ltxpool_temp, temp_name_for
from ltxpool.replica.directory import Directory
from ltxpool.replica.janitor import sweep_temp_files


def slow_write(path: str, chunks: int, ready, release) -> None:
    with DirLock(os.path.dirname(path)) as lock, AtomicWriter(path, lock) as writer:
        ready.set()
        for i in range(chunks):
            writer.write(f"{i:05d}"[-5:].encode())
            time.sleep(0.01)
        writer.commit()


def write_then_hang(path: str, ready, release) -> None:
    lock = DirLock(os.path.dirname(path))
    writer = AtomicWriter(path, lock).__enter__()
    writer.write(b"half a file")
    ready.set()
    release.wait(30)


def test_orphans_of_ltxpool_go_young_foreign_temps_stay_old_ones_go(tmp_path: Path) -> None:
    orphan = tmp_path / temp_name_for("0000000000000001-0000000000000001.ltx")
    orphan.write_bytes(b"orphan")
    young = tmp_path / "0000000000000002-0000000000000002.ltx.tmp"
    young.write_bytes(b"litestream is writing this")
    old = tmp_path / "0000000000000003-0000000000000003.ltx.tmp"
    old.write_bytes(b"litestream crashed long ago")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    keep = tmp_path / "0000000000000001-0000000000000001.ltx"
    keep.write_bytes(b"final")
    with DirLock(tmp_path) as lock:
        result = sweep_temp_files(Directory.open(tmp_path), lock, foreign_age=3600)
    assert sorted(result.removed) == sorted([orphan.name, old.name])
    assert young.exists() and keep.exists()
    assert not result.busy


def test_a_symlink_with_a_temp_name_is_removed_as_a_link_and_its_target_kept(tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    replica.mkdir()
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"precious")
    (replica / temp_name_for("a.ltx")).symlink_to(outside)
    with DirLock(replica) as lock:
        result = sweep_temp_files(Directory.open(replica), lock)
    assert len(result.removed) == 1
    assert outside.read_bytes() == b"precious"
    assert [p for p in os.listdir(replica) if p.endswith(".tmp")] == []


def test_the_janitor_skips_a_directory_a_slow_writer_holds_and_the_write_succeeds(tmp_path: Path, child) -> None:
    target = tmp_path / "0000000000000001-0000000000000009.ltx"
    writer = child(slow_write, str(target), 30)
    writer.wait_ready()
    results = []
    with DirLock(tmp_path) as lock:
        while writer.process.is_alive():
            results.append(sweep_temp_files(Directory.open(tmp_path), lock, timeout=0.02))
            time.sleep(0.01)
        assert writer.finish() == 0
        after = sweep_temp_files(Directory.open(tmp_path), lock, timeout=0.02)
    assert any(result.busy for result in results)
    assert all(result.removed == [] for result in results)
    assert not after.busy and after.removed == []
    assert target.read_bytes() == b"".join(f"{i:05d}".encode() for i in range(30))


def test_the_janitor_removes_the_temp_file_of_a_writer_killed_while_holding_the_lock(tmp_path: Path, child) -> None:
    target = tmp_path / "0000000000000001-0000000000000002.ltx"
    writer = child(write_then_hang, str(target))
    writer.wait_ready()
    with DirLock(tmp_path) as lock:
        assert sweep_temp_files(Directory.open(tmp_path), lock, timeout=0.05).busy
        writer.kill()
        result = sweep_temp_files(Directory.open(tmp_path), lock, timeout=1.0)
    assert not result.busy
    assert len(result.removed) == 1 and is_ltxpool_temp(result.removed[0])
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert not target.exists()


def test_without_a_lock_the_sweep_deletes_every_temp_file_like_the_670_cleanup(tmp_path: Path) -> None:
    (tmp_path / temp_name_for("a.ltx")).write_bytes(b"in flight")
    (tmp_path / "b.ltx.tmp").write_bytes(b"in flight too")
    result = sweep_temp_files(Directory.open(tmp_path), None)
    assert len(result.removed) == 2
