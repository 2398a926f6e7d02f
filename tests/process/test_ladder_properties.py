"""Property: over any sequence of changes, compactions, snapshots and retention, every
retained TXID restores to the database as it was, and no level 1-3 file starts at a
snapshot's TXID (#14).

A real SQLite database (rollback journal, so the page size can change and start a new
generation) is changed by random steps; after each, replicate steps and the image
(``serialize()``) of the new TXID is kept as the oracle. At the end every TXID is
restored by ltxpool: a TXID retention removed must fail to plan, never restore other
bytes; the latest must restore, by ltxpool and by Litestream 0.5.17.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltxpool.replica.compactor import compact_level
from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import COMPACTION_LEVELS, Replica
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replicate.replicator import Replicator
from tests.process.test_litestream_restores_ltxpool import litestream_bytes
from tests.support.replicate_workload import Database

CHANGES = ("insert", "insert_large", "delete", "vacuum", "shrink", "grow", "page_size")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.sampled_from(CHANGES)),
        st.tuples(st.just("compact"), st.sampled_from((1, 2, 3, 9))),
        st.tuples(st.just("retention"), st.just(0)),
    ),
    min_size=3, max_size=18,
)
ZERO_RETENTION = JanitorSettings(retention=RetentionPolicy(
    level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, snapshot_retention=0.0))


def change(db: Database, kind: str, seed: int) -> None:
    if kind == "insert":
        db.run("INSERT INTO t(body) VALUES (?)", rows=db.blobs(20, 10, 400))
    elif kind == "insert_large":
        db.run("INSERT INTO t(body) VALUES (?)", rows=db.blobs(3, 5000, 20000))
    elif kind == "delete":
        db.run(f"DELETE FROM t WHERE id % 4 = {seed % 4}")
    elif kind == "vacuum":
        db.conn.execute("VACUUM")
    elif kind == "shrink":
        db.run("DELETE FROM t WHERE id % 2 = 0")
        db.conn.execute("VACUUM")
    elif kind == "grow":
        db.run("INSERT INTO t(body) VALUES (?)", rows=db.blobs(60, 500, 3000))
    else:
        current = db.conn.execute("PRAGMA page_size").fetchone()[0]
        db.change_page_size(2048 if current == 4096 else 4096)


def assert_no_ladder_file_starts_at_a_snapshot(replica: Replica) -> None:
    snapshots = {f.min_txid for listing in replica.list_all().values() for f in listing.files if f.min_txid == 1}
    for level in COMPACTION_LEVELS:
        for f in replica.list_level(level).files:
            assert f.min_txid not in snapshots, f"level {level}: {f.name} starts at a snapshot's TXID"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_every_retained_txid_restores_its_image_and_snapshots_never_enter_the_ladder(
    steps: list[tuple[str, object]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        db = Database(str(tmp / "app.db"), "delete")
        db.run("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
        db.run("INSERT INTO t(body) VALUES (?)", rows=db.blobs(40, 100, 2000))
        root = tmp / "replica"
        replica = Replica(root)
        with Replicator(db.path, root) as replicator:
            first = replicator.step()
        assert first is not None and first.snapshot and Path(first.path).parent.name == "9"
        images: dict[int, bytes] = {first.txid: db.image()}
        for seed, (action, arg) in enumerate(steps):
            if action == "change":
                change(db, str(arg), seed)
            elif action == "compact":
                compact_level(replica, int(str(arg)))
            else:
                janitor_pass(replica, ZERO_RETENTION, time.time() + 10)
            # A replicate run per step: restarts (and reconcile) are part of the property.
            with Replicator(db.path, root) as replicator:
                result = replicator.step()
            if result is not None:
                images[result.txid] = db.image()
            assert_no_ladder_file_starts_at_a_snapshot(replica)
        db.close()
        restored = []
        for txid, image in sorted(images.items()):
            out = tmp / f"out-{txid}.db"
            try:
                restore(replica, out, txid)
            except RestorePlanError:
                continue
            assert out.read_bytes() == image, f"TXID {txid} restores other bytes than the database had"
            restored.append(txid)
        latest = max(images)
        assert latest in restored, "the latest TXID always restores"
        assert litestream_bytes(root, tmp / "theirs.db") == images[latest]
