"""Compatibility with the real Litestream 0.5.17, both ways, proven on real replicas."""

from __future__ import annotations

import time
from pathlib import Path

from ltxpool.replica.compactor import CompactionSettings, compaction_pass
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import SNAPSHOT_LEVEL, Replica
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from tests.support.litestream_peer import (
    LitestreamReplicator,
    SQLiteWriter,
    create_wal_database,
    integrity_check,
    litestream_restore,
    read_rows,
)

NO_WAITING = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
#: Litestream writes level 0 here; it compacts once, about a second after it starts
#: (its monitors tick at start), and ltxpool does every compaction after that.
LEVEL0_ONLY = {"levels": (3600.0, 3600.0, 3600.0), "snapshot_interval": 3600.0, "l0_retention": 0.0}


def test_ltxpool_restores_a_replica_litestream_wrote_at_every_level_equal_to_the_source(tmp_path: Path) -> None:
    source, replica_dir = tmp_path / "source.db", tmp_path / "replica"
    create_wal_database(source)
    with LitestreamReplicator(source, replica_dir, tmp_path / "litestream") as litestream:
        with SQLiteWriter(source):
            for level in (1, 2, 3, 9):
                litestream.wait_for_files(level)
    replica = Replica(replica_dir)
    ours, theirs = tmp_path / "ltxpool.db", tmp_path / "litestream.db"
    result = restore(replica, ours)
    litestream_restore(replica_dir, theirs)
    assert read_rows(ours) == read_rows(source)
    assert ours.read_bytes() == theirs.read_bytes(), "both restores of the same TXID must be the same bytes"
    earlier = plan_restore(replica.list_all()).inputs[0].max_txid
    at_earlier, theirs_earlier = tmp_path / "ltxpool-earlier.db", tmp_path / "litestream-earlier.db"
    restore(replica, at_earlier, earlier)
    litestream_restore(replica_dir, theirs_earlier, earlier)
    assert at_earlier.read_bytes() == theirs_earlier.read_bytes()
    assert result.txid > earlier


def test_litestream_restores_a_replica_whose_higher_levels_and_snapshot_ltxpool_compacted(tmp_path: Path) -> None:
    source, replica_dir = tmp_path / "source.db", tmp_path / "replica"
    create_wal_database(source)
    replica = Replica(replica_dir)
    for round_ in range(2):
        with LitestreamReplicator(source, replica_dir, tmp_path / f"litestream-{round_}", **LEVEL0_ONLY):
            with SQLiteWriter(source, seed=round_):
                time.sleep(1.5)
        levels = [r.level for r in compaction_pass(replica, NO_WAITING, time.time())]
        assert levels[:3] == [1, 2, 3]
    assert replica.list_level(SNAPSHOT_LEVEL).files
    janitor_pass(replica, JanitorSettings(retention=RetentionPolicy(
        level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, snapshot_retention=0.0)), time.time() + 1)
    chain = plan_restore(replica.list_all()).inputs
    assert chain[0].level == SNAPSHOT_LEVEL and len(replica.list_level(0).files) == 1
    theirs, ours = tmp_path / "litestream.db", tmp_path / "ltxpool.db"
    litestream_restore(replica_dir, theirs)
    restore(replica, ours)
    assert integrity_check(theirs) == "ok"
    assert read_rows(theirs) == read_rows(source)
    assert theirs.read_bytes() == ours.read_bytes()
