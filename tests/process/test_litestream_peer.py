"""The Litestream harness itself works: real replication, compaction, snapshot and restore."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.litestream_peer import (
    EXPECTED_VERSION,
    LitestreamError,
    LitestreamReplicator,
    SQLiteWriter,
    create_wal_database,
    integrity_check,
    litestream_ltx_entries,
    litestream_ltx_listing,
    litestream_restore,
    litestream_version,
    parse_ltx_name,
    read_rows,
    replica_ltx_files,
)


def test_litestream_fills_every_level_and_restores_the_source(tmp_path: Path) -> None:
    assert litestream_version() == EXPECTED_VERSION
    source, replica = tmp_path / "source.db", tmp_path / "replica"
    create_wal_database(source)

    with LitestreamReplicator(source, replica, tmp_path / "litestream") as litestream:
        with SQLiteWriter(source) as writer:
            for level in (1, 2, 3, 9):
                litestream.wait_for_files(level)
        assert writer.commits > 0
        assert litestream.error_lines() == []
    # SIGTERM made Litestream sync the writer's last commits into ltx/0 before it exited.

    entries = litestream_ltx_entries(replica)
    on_disk = {
        (level, *txids, path.stat().st_size)
        for level in range(10)
        for path in replica_ltx_files(replica, level)
        if (txids := parse_ltx_name(path.name))
    }
    assert {(e.level, e.min_txid, e.max_txid, e.size) for e in entries} == on_disk
    assert {e.level for e in entries} >= {0, 1, 2, 3, 9}
    assert all(e.min_txid == 1 for e in entries if e.level == 9)  # snapshots always start at 1
    assert not [name for _, _, names in os.walk(replica) for name in names if name.endswith(".tmp")]
    assert "level  min_txid" in litestream_ltx_listing(replica)

    latest = tmp_path / "latest.db"
    litestream_restore(replica, latest)
    assert integrity_check(latest) == "ok"
    assert read_rows(latest) == read_rows(source)

    # A TXID that ends a snapshot is always reachable (restore plan: that snapshot alone).
    snapshot_txid = max(e.max_txid for e in entries if e.level == 9)
    at_snapshot = tmp_path / "at-snapshot.db"
    litestream_restore(replica, at_snapshot, txid=snapshot_txid)
    assert integrity_check(at_snapshot) == "ok"
    assert 0 < len(read_rows(at_snapshot)) <= len(read_rows(source))


def test_a_litestream_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    create_wal_database(source)
    with pytest.raises(LitestreamError, match="died unexpectedly") as failure:
        with LitestreamReplicator(source, tmp_path / "replica", tmp_path / "litestream") as litestream:
            assert litestream.process is not None
            os.kill(litestream.process.pid, signal.SIGKILL)
            litestream.process.wait(10)
    assert 'msg="initialized db"' in failure.value.output


def test_a_failed_restore_raises_with_litestreams_message(tmp_path: Path) -> None:
    with pytest.raises(LitestreamError, match="no matching backup files available"):
        litestream_restore(tmp_path / "empty-replica", tmp_path / "restored.db")
