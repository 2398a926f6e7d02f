"""Snapshots go to level 9 and never climb the ladder; old replicas converge (#14, Litestream #1510).

Real SQLite databases replicated by ``Replicator``, compacted by ``compact_level``, and
restored by ltxpool and by Litestream 0.5.17 at every TXID either accepts, against the
``serialize()`` image recorded at each TXID. The control runs the same workload with the
behaviour before #14 (snapshot at level 0, the planner that starts a level at a newer
snapshot) and shows the base in every level -- the failure the new layout prevents.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ltxpool.replica.compactor import compact_level
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import COMPACTION_LEVELS, Replica
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replicate.replicator import Replicator
from tests.process.test_litestream_restores_ltxpool import (
    Images,
    assert_both_restore_every_txid,
    assert_litestream_form,
)
from tests.support.helpers import run_ltxpool
from tests.support.replicate_workload import CHANGES, Database


def replicate(db: Database, root: Path, changes: list, images: Images, *, snapshot_level: int = 9) -> None:
    with Replicator(db.path, root, snapshot_level=snapshot_level) as replicator:
        for _, change in changes:
            change(db)
            result = replicator.step()
            if result is not None:
                images[result.txid] = db.image()


def compact_every_level(replica: Replica, *, after_snapshot: bool = True, snapshot: bool = True) -> None:
    for level in COMPACTION_LEVELS:
        compact_level(replica, level, after_snapshot=after_snapshot)
    if snapshot:
        compact_level(replica, 9)


def spans(replica: Replica, level: int) -> list[tuple[int, int]]:
    return [(f.min_txid, f.max_txid) for f in replica.list_level(level).files]


def snapshot_txids(replica: Replica) -> set[int]:
    return {f.max_txid for listing in replica.list_all().values() for f in listing.files if f.min_txid == 1}


def assert_no_ladder_file_starts_at_a_snapshot(replica: Replica) -> None:
    starts = {f.min_txid for level in COMPACTION_LEVELS for f in replica.list_level(level).files}
    assert 1 not in starts, f"a level 1-3 file starts at TXID 1: {[spans(replica, lv) for lv in COMPACTION_LEVELS]}"


def run_workload(root: Path, db: Database, images: Images, *, old: bool, start: int = 0) -> Replica:
    """Three rounds of ``CHANGES`` (from ``start``), each compacted at levels 1, 2, 3 (and 9
    after the second); ``old``: with the behaviour before #14."""
    replica = Replica(root)
    level = 0 if old else 9
    replicate(db, root, CHANGES[start:4], images, snapshot_level=level)
    compact_every_level(replica, after_snapshot=not old, snapshot=False)
    replicate(db, root, CHANGES[4:7], images, snapshot_level=level)
    compact_every_level(replica, after_snapshot=not old)
    replicate(db, root, CHANGES[7:], images, snapshot_level=level)
    compact_every_level(replica, after_snapshot=not old, snapshot=False)
    return replica


def test_the_first_step_writes_level_9_and_no_level_1_to_3_file_starts_at_a_snapshot(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    replica = Replica(root)
    replicate(db, root, CHANGES[:1], images)
    assert spans(replica, 9) == [(1, 1)] and spans(replica, 0) == [], "the snapshot is at level 9 only"
    run_workload(root, db, images, old=False, start=1)
    db.close()
    assert not any(f.min_txid == 1 for f in replica.list_level(0).files), "level 0 holds only changes"
    assert all(replica.list_level(level).files for level in (1, 2, 3, 9))
    assert_no_ladder_file_starts_at_a_snapshot(replica)
    assert_litestream_form(root)
    restored = assert_both_restore_every_txid(root, images, tmp_path / "out")
    assert len([t for t in restored if t != max(images)]) >= 3


def small_updates(root: Path, db: Database, images: Images, *, old: bool) -> Replica:
    """A 2 MiB database, then 3 rounds of 5 one-row updates, compacted at levels 1-3 after each."""
    db.run("CREATE TABLE base(id INTEGER PRIMARY KEY, body BLOB)")
    db.run("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
           "INSERT INTO base(body) SELECT randomblob(1000) FROM n")
    replica = Replica(root)
    with Replicator(db.path, root, snapshot_level=0 if old else 9) as replicator:
        for round_ in range(3):
            for i in range(5):
                if replicator.step() is not None:
                    images[replicator.state.txid] = db.image()
                db.run(f"UPDATE base SET body = randomblob(1000) WHERE id = {1 + 97 * (5 * round_ + i)}")
            assert replicator.step() is not None
            images[replicator.state.txid] = db.image()
            compact_every_level(replica, after_snapshot=not old, snapshot=False)
    return replica


def test_control_the_old_behaviour_puts_the_base_into_levels_1_to_3(tmp_path: Path) -> None:
    new_db, old_db = Database(str(tmp_path / "new.db"), "wal"), Database(str(tmp_path / "old.db"), "wal")
    new_images: Images = {}
    old_images: Images = {}
    new = small_updates(tmp_path / "new", new_db, new_images, old=False)
    old = small_updates(tmp_path / "old", old_db, old_images, old=True)
    new_db.close()
    old_db.close()
    assert_no_ladder_file_starts_at_a_snapshot(new)
    assert all(spans(old, level)[0][0] == 1 for level in COMPACTION_LEVELS), "the control must show the base climbing"
    base = new.list_level(9).files[0].size
    ladder_old = sum(f.size for level in COMPACTION_LEVELS for f in old.list_level(level).files)
    ladder_new = sum(f.size for level in COMPACTION_LEVELS for f in new.list_level(level).files)
    change = sum(f.size for f in new.list_level(0).files)
    print(f"levels 1-3: old {ladder_old} bytes, new {ladder_new} bytes, base {base} bytes, level 0 {change} bytes")
    assert ladder_old >= 3 * base, "before #14 every level holds a copy of the base"
    assert ladder_new <= 3 * change < base, "now each level holds at most the changes once"
    assert_both_restore_every_txid(tmp_path / "new", new_images, tmp_path / "out-new")
    assert_both_restore_every_txid(tmp_path / "old", old_images, tmp_path / "out-old")


def test_a_replica_in_the_old_layout_converges_and_restores_by_both_tools(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    replica = Replica(root)
    replicate(db, root, CHANGES[:4], images, snapshot_level=0)
    compact_every_level(replica, after_snapshot=False, snapshot=False)
    assert spans(replica, 0)[0] == (1, 1) and all(spans(replica, lv)[0][0] == 1 for lv in COMPACTION_LEVELS)
    assert_both_restore_every_txid(root, images, tmp_path / "out-old")
    # The new code from here on.
    replicate(db, root, CHANGES[4:7], images)
    compact_every_level(replica)
    (snapshot,) = spans(replica, 9)
    assert snapshot == (1, max(images)), "the next level-9 snapshot is the new base"
    replicate(db, root, CHANGES[7:], images)
    compact_every_level(replica, snapshot=False)
    for level in COMPACTION_LEVELS:
        newest = replica.list_level(level).files[-1]
        assert newest.min_txid > snapshot[1], f"level {level}: {spans(replica, level)} after the snapshot {snapshot}"
    assert_litestream_form(root)
    assert_both_restore_every_txid(root, images, tmp_path / "out-converged")
    policy = RetentionPolicy(level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, snapshot_retention=0.0)
    report = janitor_pass(replica, JanitorSettings(retention=policy), time.time() + 10)
    assert report.retention_removed > 0
    assert not any(f.min_txid == 1 for level in (0, 1, 2, 3) for f in replica.list_level(level).files), \
        "retention removes the old base copies the level-9 snapshot covers"
    retained = {t: image for t, image in images.items() if t >= snapshot[1]}
    assert_both_restore_every_txid(root, retained, tmp_path / "out-retained", at_least=2)


def test_status_shows_compaction_bytes_and_write_amplification_since_the_snapshot(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root = tmp_path / "replica"
    replica = run_workload(root, db, {}, old=False)
    db.close()
    (snapshot,) = [f for f in replica.list_level(9).files if f.max_txid == max(snapshot_txids(replica))]
    level0 = [f for f in replica.list_level(0).files if f.min_txid > snapshot.max_txid]
    start = min(f.min_txid for f in level0)
    ladder = [f for lv in COMPACTION_LEVELS for f in replica.list_level(lv).files if f.min_txid >= start]
    assert ladder and all(f.min_txid > snapshot.max_txid for f in ladder)
    done = run_ltxpool("status", "--json", str(root), timeout=30)
    assert done.returncode == 0, done.stderr
    (status,) = json.loads(done.stdout)["replicas"]
    expected = {
        "snapshot_txid": snapshot.max_txid, "snapshot_bytes": snapshot.size, "window_start": start,
        "level0_bytes": sum(f.size for f in level0), "compaction_bytes": sum(f.size for f in ladder),
    }
    expected["write_amplification"] = expected["compaction_bytes"] / expected["level0_bytes"]
    assert status["ladder"] == expected
    prometheus = run_ltxpool("status", "--prometheus", str(root), timeout=30).stdout
    gauges = {family.name: family.samples[0].value for family in text_string_to_metric_families(prometheus)
              if family.name.startswith("ltxpool_replica_") and family.samples}
    assert gauges["ltxpool_replica_compaction_bytes_since_snapshot"] == expected["compaction_bytes"]
    assert gauges["ltxpool_replica_level0_bytes_since_snapshot"] == expected["level0_bytes"]
    assert gauges["ltxpool_replica_write_amplification"] == expected["write_amplification"]
    table = run_ltxpool("status", str(root), timeout=30).stdout
    assert f"write amplification {expected['write_amplification']:.2f}" in table
