"""Ingest: every TXID it writes restores to exactly the database it captured."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from ltxpool.ltx import lock_page, open_ltx, verify_file
from ltxpool.replica.compactor import CompactionSettings, compaction_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.plan import latest_snapshot, level_problems
from ltxpool.replica.restore import restore
from ltxpool.replicate.errors import (
    DatabaseBusyError,
    DatabaseMismatchError,
    ReplicaBusyError,
)
from ltxpool.replicate.replicator import Replicator
from ltxpool.replicate.sqlite_source import RollbackPosition, SqliteSource, WalPosition
from ltxpool.replicate.state import STATE_DIR
from tests.support.replicate_workload import CHANGES, Database, restored_bytes

MODES = ["wal", "delete"]


def _level0(root: str) -> list[tuple[int, int]]:
    return _level(root, 0)


def _level(root: str, level: int) -> list[tuple[int, int]]:
    return [(f.min_txid, f.max_txid) for f in Replica(root).list_level(level).files]


def _assert_every_txid_restores(root: str, images: dict[int, bytes], scratch: str) -> None:
    for txid, image in images.items():
        out = os.path.join(scratch, f"restored-{txid}.db")
        result = restore(Replica(root), out, txid)
        assert result.txid == txid
        assert result.checksum_verified
        assert restored_bytes(out) == image, f"TXID {txid} differs from the database it captured"


@pytest.mark.parametrize("mode", MODES)
def test_every_txid_restores_to_the_database_it_captured(tmp_path, mode):
    db = Database(str(tmp_path / "app.db"), mode)
    root = str(tmp_path / "replica")
    images: dict[int, bytes] = {}
    replicator = Replicator(db.path, root)
    try:
        for name, change in CHANGES:
            change(db)
            result = replicator.step()
            if result is None:
                assert db.image() == images[max(images)], f"{name}: a change was missed"
                continue
            assert result.txid == max(images, default=0) + 1, name
            images[result.txid] = db.image()
        # A page-size change needs the database to itself (in WAL mode it leaves WAL mode).
        replicator.close()
        db.change_page_size(1024)
        replicator = Replicator(db.path, root)
        result = replicator.step()
        assert result is not None and result.snapshot and result.page_size == 1024
        images[result.txid] = db.image()
        assert os.path.basename(result.path) == f"{1:016x}-{result.txid:016x}.ltx"
        CHANGES[1][1](db)
        result = replicator.step()
        assert result is not None and not result.snapshot
        images[result.txid] = db.image()
    finally:
        replicator.close()
    assert sorted(images) == list(range(1, len(images) + 1))
    _assert_every_txid_restores(root, images, str(tmp_path))


def test_wal_steps_read_only_the_pages_of_new_frames(tmp_path):
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    db.run("INSERT INTO docs(body) VALUES (?)", rows=db.blobs(2000, 200, 800))
    with Replicator(db.path, str(tmp_path / "replica")) as replicator:
        first = replicator.step()
        db.run("UPDATE docs SET tag = 'x' WHERE id = 1000")
        second = replicator.step()
    assert first is not None and first.snapshot and first.full_scan
    assert second is not None and not second.full_scan
    assert second.pages <= 3 < first.pages


def test_pinned_replicator_stays_incremental_across_application_checkpoints(tmp_path):
    db = Database(str(tmp_path / "app.db"), "wal")
    db.conn.execute("PRAGMA wal_autocheckpoint=100")
    CHANGES[0][1](db)
    root = str(tmp_path / "replica")
    images = {}
    salts = set()
    with Replicator(db.path, root, pin=True) as replicator:
        replicator.source.checkpoint_frames = 40
        for _ in range(12):
            db.run("INSERT INTO docs(body) VALUES (?)", rows=db.blobs(60, 500, 1500))
            result = replicator.step()
            assert result is not None
            assert result.snapshot or not result.full_scan
            images[result.txid] = db.image()
            salts.add((replicator.state.position.salt1, replicator.state.position.salt2))
    assert len(salts) > 2, "the WAL was never restarted: the test proves nothing"
    _assert_every_txid_restores(root, images, str(tmp_path))


def test_unpinned_step_after_a_wal_restart_compares_every_page(tmp_path):
    """Frames appended after our position and checkpointed away before a restart are
    nowhere in the new WAL: only a full compare finds their pages."""
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    root = str(tmp_path / "replica")
    with Replicator(db.path, root) as replicator:
        replicator.step()
        db.run("UPDATE docs SET tag = 'old generation' WHERE id = 7")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.run("UPDATE docs SET tag = 'new generation' WHERE id = 290")
        result = replicator.step()
    assert result is not None and result.full_scan and result.pages == 2
    _assert_every_txid_restores(root, {result.txid: db.image()}, str(tmp_path))


def test_wal_position_that_the_wal_does_not_match_is_not_trusted(tmp_path):
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    with SqliteSource(db.path) as source:
        with source.capture(None) as image:
            position = image.position
        assert isinstance(position, WalPosition) and position.frames > 0
        with source.capture(position) as image:
            assert image.candidates == []
        for wrong in (
            replace(position, frames=position.frames + 1000),
            replace(position, checksum1=position.checksum1 ^ 1),
            replace(position, inode=position.inode + 1),
            RollbackPosition(position.device, position.inode, 1, 4096, image.commit),
        ):
            with source.capture(wrong) as image:
                assert image.candidates is None, wrong


@pytest.mark.parametrize("mode", MODES)
def test_unchanged_database_writes_no_file(tmp_path, mode):
    db = Database(str(tmp_path / "app.db"), mode)
    CHANGES[0][1](db)
    root = str(tmp_path / "replica")
    with Replicator(db.path, root) as replicator:
        assert replicator.step() is not None
        assert replicator.step() is None
    with Replicator(db.path, root) as replicator:
        assert replicator.recovery == "resumed at TXID 1"
        assert replicator.step() is None
    assert _level0(root) == [] and _level(root, 9) == [(1, 1)], "the first step is a snapshot, at level 9"
    assert [n for n in os.listdir(Replica(root).level_dir(9)) if not n.startswith(".")] == [f"{1:016x}-{1:016x}.ltx"]
    assert [n for n in os.listdir(Replica(root).level_dir(0)) if not n.startswith(".")] == []


@pytest.mark.parametrize("mode", MODES)
def test_restart_resumes_at_the_next_txid(tmp_path, mode):
    db = Database(str(tmp_path / "app.db"), mode)
    root = str(tmp_path / "replica")
    images = {}
    for name, change in CHANGES[:4]:
        change(db)
        with Replicator(db.path, root) as replicator:
            result = replicator.step()
        assert result is not None, name
        images[result.txid] = db.image()
    assert sorted(images) == [1, 2, 3, 4]
    _assert_every_txid_restores(root, images, str(tmp_path))


def _state_files(root: str) -> dict[str, bytes]:
    return {name: Path(root, STATE_DIR, name).read_bytes() for name in ("state.json", "checksums")}


def _put_state_files(root: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        Path(root, STATE_DIR, name).write_bytes(data)


@pytest.mark.parametrize("array_written", [False, True], ids=["state-behind", "array-ahead"])
def test_crash_between_ltx_file_and_state_replays_the_file(tmp_path, array_written):
    db = Database(str(tmp_path / "app.db"), "wal")
    root = str(tmp_path / "replica")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    with Replicator(db.path, root) as replicator:
        replicator.step()
    before = _state_files(root)
    CHANGES[3][1](db)
    with Replicator(db.path, root) as replicator:
        assert replicator.step() is not None
    after = _state_files(root)
    # As if the process died after the LTX file of TXID 2 was durable but before
    # state.json (and, in one case, the checksum array) reached the disk.
    _put_state_files(root, {"state.json": before["state.json"], "checksums": after["checksums"] if array_written else before["checksums"]})
    CHANGES[5][1](db)
    with Replicator(db.path, root) as replicator:
        assert replicator.recovery == "replayed TXID 2-2 from level 0"
        result = replicator.step()
    assert result is not None and result.txid == 3 and not result.snapshot
    assert _level0(root) == [(2, 2), (3, 3)] and _level(root, 9) == [(1, 1)]
    _assert_every_txid_restores(root, {3: db.image()}, str(tmp_path))


def test_lost_state_is_rebuilt_from_the_replica(tmp_path):
    db = Database(str(tmp_path / "app.db"), "delete")
    root = str(tmp_path / "replica")
    for _, change in CHANGES[:3]:
        change(db)
        with Replicator(db.path, root) as replicator:
            replicator.step()
    shutil.rmtree(os.path.join(root, STATE_DIR))
    with Replicator(db.path, root) as replicator:
        assert replicator.recovery == "rebuilt the state of TXID 3 from the replica"
        assert replicator.step() is None
        db.run("UPDATE docs SET tag = 'z' WHERE id = 3")
        result = replicator.step()
    assert result is not None and result.txid == 4 and result.pages <= 3
    _assert_every_txid_restores(root, {4: db.image()}, str(tmp_path))


def test_corrupt_state_is_not_trusted(tmp_path):
    db = Database(str(tmp_path / "app.db"), "delete")
    root = str(tmp_path / "replica")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    with Replicator(db.path, root) as replicator:
        replicator.step()
    files = _state_files(root)
    flipped = bytearray(files["checksums"])
    flipped[20] ^= 0xFF
    _put_state_files(root, {"checksums": bytes(flipped)})
    with Replicator(db.path, root) as replicator:
        assert replicator.recovery == "rebuilt the state of TXID 1 from the replica"
        assert replicator.step() is None


@pytest.mark.parametrize("mode", MODES)
def test_database_locked_past_the_timeout_is_a_retryable_error(tmp_path, mode):
    db = Database(str(tmp_path / "app.db"), mode)
    CHANGES[0][1](db)
    with Replicator(db.path, str(tmp_path / "replica"), busy_timeout=0.05) as replicator:
        db.conn.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseBusyError, match="database is locked"):
            replicator.step()
        db.conn.execute("COMMIT")
        result = replicator.step()
    assert result is not None and result.txid == 1


def test_second_replicator_on_one_replica_is_refused(tmp_path):
    db = Database(str(tmp_path / "app.db"), "wal")
    CHANGES[0][1](db)
    root = str(tmp_path / "replica")
    with Replicator(db.path, root):
        with pytest.raises(ReplicaBusyError, match=r"another ltxpool process \(a replicate or a pool worker\)"):
            Replicator(db.path, root)


def test_replica_of_another_database_is_refused(tmp_path):
    first = Database(str(tmp_path / "first.db"), "wal")
    second = Database(str(tmp_path / "second.db"), "wal")
    CHANGES[0][1](first)
    CHANGES[0][1](second)
    root = str(tmp_path / "replica")
    with Replicator(first.path, root) as replicator:
        replicator.step()
    with pytest.raises(DatabaseMismatchError, match="first.db"):
        Replicator(second.path, root)


def test_database_replaced_by_rename_is_compared_in_full(tmp_path):
    db = Database(str(tmp_path / "app.db"), "delete")
    CHANGES[0][1](db)
    CHANGES[1][1](db)
    root = str(tmp_path / "replica")
    with Replicator(db.path, root) as replicator:
        replicator.step()
        other = Database(str(tmp_path / "other.db"), "delete")
        CHANGES[0][1](other)
        other.run("INSERT INTO docs(body) VALUES (?)", rows=other.blobs(10, 10, 20))
        other.close()
        os.rename(other.path, db.path)
        result = replicator.step()
    db.close()
    with sqlite3.connect(str(tmp_path / "app.db")) as conn:
        image = conn.serialize()
    assert result is not None and result.full_scan
    _assert_every_txid_restores(root, {result.txid: image}, str(tmp_path))


def test_database_past_one_gib_crosses_the_lock_page(tmp_path):
    """The lock page (1 GiB / page size + 1) is never stored, pages past it are.

    64 KiB pages keep the page count low (the lock page is page 16385); zero blobs
    keep SQLite, CRC and LZ4 fast. The file is still past 1 GiB, as it must be.
    Auto-vacuum makes the delete shrink the file, so the second file also drops pages.
    """
    from ltxpool.replica.compactor import compact_level

    path = str(tmp_path / "big.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size=65536")
    conn.execute("PRAGMA auto_vacuum=full")
    conn.execute("PRAGMA journal_mode=off")
    conn.execute("PRAGMA synchronous=off")
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO big(b) VALUES (zeroblob(?))", [(1 << 20,)] * 1040)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=delete")
    assert os.path.getsize(path) > (1 << 30) + 65536
    lock = lock_page(65536)
    root = str(tmp_path / "replica")
    with Replicator(path, root) as replicator:
        first = replicator.step()
        conn.execute("UPDATE big SET b = randomblob(100000) WHERE id IN (1, 1030, 1035)")
        conn.execute("DELETE FROM big WHERE id > 1036")
        second = replicator.step()
    assert first is not None and first.commit > lock
    assert second is not None and second.commit > lock and second.commit < first.commit
    with open_ltx(first.path) as decoder:
        pgnos = [pgno for pgno, _ in decoder.pages()]
    assert lock not in pgnos and pgnos[-1] == first.commit and len(pgnos) == first.commit - 1
    verify_file(second.path)
    compacted = compact_level(Replica(root), 1)
    assert compacted is not None and (compacted.min_txid, compacted.max_txid) == (2, 2), "level 1 starts after the snapshot"
    out = str(tmp_path / "restored.db")
    result = restore(Replica(root), out)
    assert result.txid == 2 and result.checksum_verified
    conn.close()
    with open(path, "rb") as source, open(out, "rb") as restored:
        while True:
            a, b = source.read(1 << 24), restored.read(1 << 24)
            assert a == b
            if not a:
                break


def test_compaction_goes_on_across_a_page_size_change_and_every_level_restores(tmp_path):
    due_now = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
    db = Database(str(tmp_path / "app.db"), "delete")
    root = str(tmp_path / "replica")
    images: dict[int, bytes] = {}
    with Replicator(db.path, root) as replicator:
        for _, change in CHANGES[:4]:
            change(db)
            images[replicator.step().txid] = db.image()
        compaction_pass(Replica(root), due_now, 0.0)
    db.change_page_size(1024)
    with Replicator(db.path, root) as replicator:
        images[replicator.step().txid] = db.image()
        for _, change in CHANGES[1:3]:
            change(db)
            images[replicator.step().txid] = db.image()
    levels = [r.level for r in compaction_pass(Replica(root), due_now, 10**10)]
    assert levels == [1, 2, 3, 9], "every level must compact the new generation"
    listings = Replica(root).list_all()
    for listing in listings.values():
        assert level_problems(listing, latest_snapshot(listings)) == [] or listing.level == 9
    assert all(f.min_txid > 1 for level in (1, 2, 3) for f in listings[level].files), "no base in the ladder"
    latest = max(images)
    out = tmp_path / "latest.db"
    assert restore(Replica(root), out).txid == latest
    assert restored_bytes(out) == images[latest]
