"""Compaction, snapshots and retention, with restore as the proof: every TXID, page for page."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, open_ltx, verify_file
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.compactor import (
    CompactionSettings,
    compact_level,
    compaction_pass,
    next_due,
)
from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from tests.support.helpers import hold_claim
from tests.support.synthetic import SyntheticStream

DUE_NOW = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)


def restored(replica: Replica, tmp_path: Path, txid: int | None) -> bytes:
    output = tmp_path / f"restore-{txid}-{time.monotonic_ns()}.db"
    restore(replica, output, txid, check_integrity=False)
    data = output.read_bytes()
    output.unlink()
    return data


def assert_every_reachable_txid_restores(stream: SyntheticStream, tmp_path: Path) -> list[int]:
    reachable = []
    for txid in range(1, stream.txid + 1):
        try:
            plan_restore(stream.replica.list_all(), txid)
        except RestorePlanError:
            continue
        assert restored(stream.replica, tmp_path, txid) == stream.images[txid], f"TXID {txid}"
        reachable.append(txid)
    assert restored(stream.replica, tmp_path, None) == stream.images[stream.txid]
    return reachable


def test_restore_at_every_txid_equals_the_source_before_and_after_compaction_at_every_level(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=7)
    stream.run(12)
    assert assert_every_reachable_txid_restores(stream, tmp_path) == list(range(1, 13))
    for rounds in range(3):
        assert compact_level(stream.replica, 1) is not None
        stream.run(5)
        assert compact_level(stream.replica, 1) is not None
        assert compact_level(stream.replica, 2) is not None
        stream.run(4)
        assert compact_level(stream.replica, 1) is not None
        assert compact_level(stream.replica, 2) is not None
        assert compact_level(stream.replica, 3) is not None
        if rounds == 1:
            assert compact_level(stream.replica, 9) is not None
        stream.run(3)
        assert assert_every_reachable_txid_restores(stream, tmp_path) == list(range(1, stream.txid + 1))
    levels = {level: len(listing.files) for level, listing in stream.replica.list_all().items()}
    assert all(levels[level] > 0 for level in (0, 1, 2, 3, 9))


def test_restore_at_every_remaining_txid_equals_the_source_after_retention(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=11)
    for _ in range(4):
        stream.run(6)
        compaction_pass(stream.replica, DUE_NOW, time.time())
    stream.run(3)
    policy = RetentionPolicy(level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, snapshot_retention=0.0)
    report = janitor_pass(stream.replica, JanitorSettings(retention=policy), time.time() + 10)
    assert report.retention_removed > 0
    reachable = assert_every_reachable_txid_restores(stream, tmp_path)
    assert stream.txid in reachable


def test_a_compacted_file_takes_its_header_from_the_first_and_last_inputs_and_drops_pages_past_commit(
    tmp_path: Path,
) -> None:
    # Old-form inputs (flags 0, with checksums): the output is in Litestream's form all the same.
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=3)
    stream.run(1)
    compact_level(stream.replica, 1)
    while True:
        before = stream.commit
        stream.transaction()
        if stream.commit < before:
            break
    inputs = stream.replica.list_level(0).files[1:]
    result = compact_level(stream.replica, 1)
    assert result is not None and result.inputs == len(inputs)
    with open_ltx(inputs[0].path) as first:
        first_header = first.header
    with open_ltx(inputs[-1].path) as last:
        last_header = last.header
        for _ in last.pages():
            pass
        last_trailer = last.trailer
    output = stream.replica.path_of(1, inputs[0].min_txid, inputs[-1].max_txid)
    with open_ltx(output) as merged:
        header = merged.header
        pgnos = [pgno for pgno, _ in merged.pages()]
        trailer = merged.trailer
    assert (header.min_txid, header.page_size) == (first_header.min_txid, first_header.page_size)
    assert (header.max_txid, header.commit, header.timestamp) == (
        last_header.max_txid, last_header.commit, last_header.timestamp)
    assert first_header.flags == 0 and first_header.pre_apply_checksum != 0 and last_trailer.post_apply_checksum != 0
    assert (header.flags, header.pre_apply_checksum, trailer.post_apply_checksum) == (HEADER_FLAG_NO_CHECKSUM, 0, 0)
    assert max(pgnos) <= header.commit
    assert os.stat(output).st_mtime == pytest.approx(header.timestamp / 1000)


def test_a_level_claimed_by_another_worker_is_skipped_and_nothing_to_do_is_no_result(tmp_path: Path, child) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=5)
    stream.run(3)
    holder = child(hold_claim, stream.replica.ensure_level_dir(1))
    holder.wait_ready()
    # The holder is our child: a worker of the pool whose supervisor is this process.
    assert compact_level(stream.replica, 1, pool=os.getpid()) is None
    assert stream.replica.list_level(1).files == []
    holder.finish()
    assert compact_level(stream.replica, 1) is not None
    assert compact_level(stream.replica, 1) is None
    assert [r.level for r in compaction_pass(stream.replica, DUE_NOW, time.time())] == [2, 3, 9]
    assert compaction_pass(stream.replica, DUE_NOW, time.time()) == []


def test_levels_are_compacted_only_when_their_interval_has_passed(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=9)
    stream.run(3)
    settings = CompactionSettings(intervals={1: 60.0, 2: 3600.0, 3: 3600.0}, snapshot_interval=86400.0)
    now = time.time()
    assert [r.level for r in compaction_pass(stream.replica, settings, now)] == [1, 2, 3, 9]
    stream.run(2)
    assert compaction_pass(stream.replica, settings, now + 1) == []
    later = stream.replica.list_level(1).files[-1].mtime + 61
    assert [r.level for r in compaction_pass(stream.replica, settings, later)] == [1]


def test_the_janitor_quarantines_a_corrupt_file_with_a_note_and_never_deletes_it(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=13)
    stream.run(4)
    victim = Path(stream.replica.list_level(0).files[2].path)
    data = bytearray(victim.read_bytes())
    data[150] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptLTXError):
        verify_file(victim)
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.quarantined == 1
    moved = Path(stream.replica.quarantine_dir) / f"0-{victim.name}"
    assert moved.read_bytes() == bytes(data)
    note = Path(str(moved) + ".reason").read_text()
    assert str(victim) in note and "corrupt" in note
    with pytest.raises(RestorePlanError, match="gap after TXID 2"):
        plan_restore(stream.replica.list_all(), 4)


def test_a_pass_started_exactly_when_next_due_says_finds_the_level_due(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=17)
    stream.run(2)
    settings = CompactionSettings(intervals={1: 0.3, 2: 3600.0, 3: 3600.0}, snapshot_interval=86400.0)
    compaction_pass(stream.replica, settings, time.time())
    stream.run(1)
    for f in stream.replica.list_level(1).files:
        os.utime(f.path, (1795759078.3, 1795759078.3))
    due = next_due(stream.replica, settings, 0.0)
    assert [r.level for r in compaction_pass(stream.replica, settings, due)] == [1]
