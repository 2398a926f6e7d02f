"""The per-TXID record: what restore and reconcile verify against, now that files carry no checksums."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica import txid_record
from ltxpool.replica.directory import Directory
from ltxpool.replica.errors import TxidRecordError
from ltxpool.replica.layout import STATE_DIR, Replica
from ltxpool.replica.restore import TXID_RECORD, restore
from ltxpool.replica.txid_record import RECORD_NAME, RECORD_SIZE, TxidRecord, lookup, recorded_checksum
from ltxpool.replicate import replicator as replicator_module
from ltxpool.replicate.replicator import Replicator
from tests.support.replicate_workload import CHANGES, Database
from tests.support.users import User

FLAG = 1 << 63


def opened(tmp_path: Path) -> Directory:
    return Directory.open(tmp_path)


def test_appended_records_are_found_by_txid_and_nothing_else_is(tmp_path: Path) -> None:
    with opened(tmp_path) as directory:
        record = TxidRecord(directory)
        assert record.created and record.last_txid() == 0
        record.extend([(1, FLAG | 11), (2, FLAG | 22), (5, FLAG | 55)])
        record.append(6, FLAG | 66)
        assert [lookup(directory, t) for t in range(8)] == [None, FLAG | 11, FLAG | 22, None, None, FLAG | 55, FLAG | 66, None]
        assert record.lookup(5) == FLAG | 55 and record.last_txid() == 6
        with pytest.raises(ValueError, match="does not follow TXID 6"):
            record.append(6, FLAG)
        record.close()
        again = TxidRecord(directory)
        assert not again.created and again.count == 4
        again.close()


def test_a_partial_last_record_is_ignored_by_readers_and_cut_by_the_writer(tmp_path: Path) -> None:
    with opened(tmp_path) as directory:
        record = TxidRecord(directory)
        record.extend([(1, FLAG | 1), (2, FLAG | 2)])
        record.close()
        with open(tmp_path / RECORD_NAME, "ab") as f:
            f.write(struct.pack(">Q", 3))  # a crash half-way through the record of TXID 3
        assert lookup(directory, 3) is None and lookup(directory, 2) == FLAG | 2
        record = TxidRecord(directory)
        assert record.count == 2 and os.path.getsize(tmp_path / RECORD_NAME) == 2 * RECORD_SIZE
        record.append(3, FLAG | 3)
        assert lookup(directory, 3) == FLAG | 3
        record.close()


def test_keep_through_drops_the_records_of_a_history_no_longer_on_disk(tmp_path: Path) -> None:
    with opened(tmp_path) as directory:
        record = TxidRecord(directory)
        record.extend([(t, FLAG | t) for t in range(1, 11)])
        record.keep_through(7)
        assert record.last_txid() == 7 and lookup(directory, 8) is None
        record.keep_through(0)
        assert record.count == 0
        record.close()


def test_prune_keeps_what_a_restore_can_reach_and_at_most_half_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(txid_record, "RECORD_LIMIT", 8)
    with opened(tmp_path) as directory:
        record = TxidRecord(directory)
        record.extend([(t, FLAG | t) for t in range(1, 21)])
        record.prune(18)
        assert [lookup(directory, t) is not None for t in (17, 18, 20)] == [False, True, True]
        record.prune(1)
        assert record.count == 3, "nothing below 18 comes back"
        record.extend([(t, FLAG | t) for t in range(21, 31)])
        record.prune(1)
        assert record.count == 4 and record.lookup(27) == FLAG | 27 and record.lookup(26) is None
        record.append(31, FLAG | 31)  # the reopened descriptor appends where the rewrite ended
        assert lookup(directory, 31) == FLAG | 31 and os.path.getsize(tmp_path / RECORD_NAME) == 5 * RECORD_SIZE
        record.close()


def test_a_record_with_a_second_link_is_no_record_to_readers_and_refused_by_the_writer(tmp_path: Path) -> None:
    with opened(tmp_path) as directory:
        record = TxidRecord(directory)
        record.append(1, FLAG | 1)
        record.close()
        os.link(tmp_path / RECORD_NAME, tmp_path / "planted")
        assert lookup(directory, 1) is None
        with pytest.raises(TxidRecordError, match="hard links") as refused:
            TxidRecord(directory)
        assert refused.value.path == str(tmp_path / RECORD_NAME) and refused.value.step == "open txid record"


def test_a_replica_without_a_state_directory_has_no_record(tmp_path: Path) -> None:
    (tmp_path / "replica").mkdir()
    assert recorded_checksum(Replica(tmp_path / "replica"), 1) is None


# --- replicate keeps it, restore and reconcile use it ------------------------------------


def replicated(tmp_path: Path, changes: int = 5) -> tuple[Database, Path, dict[int, bytes]]:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    with Replicator(db.path, root) as replicator:
        for _, change in CHANGES[:changes]:
            change(db)
            if (result := replicator.step()) is not None:
                images[result.txid] = db.image()
    return db, root, images


def test_every_step_records_the_checksum_restore_then_verifies(tmp_path: Path) -> None:
    db, root, images = replicated(tmp_path)
    db.close()
    for txid in images:
        result = restore(Replica(root), tmp_path / f"out-{txid}.db", txid)
        assert result.verified_by == (TXID_RECORD,)
        assert (tmp_path / f"out-{txid}.db").read_bytes() == images[txid]


def test_a_crash_between_the_ltx_file_and_its_record_is_repaired_at_start(tmp_path: Path) -> None:
    db, root, images = replicated(tmp_path)
    db.close()
    path = root / STATE_DIR / RECORD_NAME
    os.truncate(path, os.path.getsize(path) - RECORD_SIZE)
    latest = max(images)
    assert recorded_checksum(Replica(root), latest) is None
    Replicator(db.path, root).close()
    assert recorded_checksum(Replica(root), latest) is not None
    assert restore(Replica(root), tmp_path / "out.db").verified_by == (TXID_RECORD,)


def test_a_replica_started_again_from_nothing_drops_the_old_records(tmp_path: Path) -> None:
    db, root, _ = replicated(tmp_path)
    first = recorded_checksum(Replica(root), 1)
    shutil.rmtree(root / "ltx")
    with Replicator(db.path, root) as replicator:
        result = replicator.step()
    db.close()
    assert result is not None and result.txid == 1
    assert recorded_checksum(Replica(root), 2) is None and recorded_checksum(Replica(root), 1) != first
    assert restore(Replica(root), tmp_path / "out.db").verified_by == (TXID_RECORD,)


def test_reconcile_checks_the_state_against_the_record(tmp_path: Path) -> None:
    db, root, images = replicated(tmp_path)
    db.close()
    Replicator(db.path, root).close()  # control: the true record resumes
    path, latest = root / STATE_DIR / RECORD_NAME, max(images)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the record of the newest TXID, wrong
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLTXError, match=f"chain of TXID {latest} does not give the database checksum recorded"):
        Replicator(db.path, root)


def test_replicate_bounds_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(txid_record, "RECORD_LIMIT", 4)
    monkeypatch.setattr(replicator_module, "RECORD_LIMIT", 4)
    db, root, images = replicated(tmp_path, changes=len(CHANGES))
    db.close()
    assert len(images) > 6
    assert os.path.getsize(root / STATE_DIR / RECORD_NAME) <= 5 * RECORD_SIZE
    assert recorded_checksum(Replica(root), max(images)) is not None
    assert recorded_checksum(Replica(root), 1) is None


def test_a_reader_who_may_not_read_the_record_restores_unverified_and_is_told(shared_tmp: str, nobody: User) -> None:
    base = Path(shared_tmp)
    db, root, images = replicated(base)
    db.close()
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(root, 0o755)
    os.chmod(root / STATE_DIR / RECORD_NAME, 0o600)
    out = base / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    assert restore(Replica(root), out / "as-root.db").verified_by == (TXID_RECORD,)  # control
    os.seteuid(nobody.uid)
    try:
        result = restore(Replica(root), out / "as-nobody.db")
    finally:
        os.seteuid(0)
    assert result.verified_by == () and not result.checksum_verified
    assert (out / "as-nobody.db").read_bytes() == images[max(images)]
