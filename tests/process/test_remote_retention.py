"""Local retention never deletes a file the bucket does not hold yet (#16).

The janitor's pass over a replica with a remote takes the shipped record
(``<replica>/.ltxpool-remote/shipped``): a file retention would remove stays unless
the record names it. Control in each test: the same replica without the rule loses
the files.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ltxpool.replica.compactor import CompactionSettings, compaction_pass
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.retention import RetentionPolicy, plan_retention
from ltxpool.replica.shipped import read_shipped, shipped_key, write_shipped
from tests.support.synthetic import SyntheticStream

DUE_NOW = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
AT_ONCE = JanitorSettings(retention=RetentionPolicy(level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0},
                                                    snapshot_retention=0.0))


def compacted_replica(root: Path) -> Replica:
    stream = SyntheticStream(Replica(root), seed=5)
    for _ in range(3):
        stream.run(6)
        compaction_pass(stream.replica, DUE_NOW, time.time())
    stream.run(2)
    return stream.replica


def files(replica: Replica) -> set[tuple[int, int, int, int]]:
    return {shipped_key(f) for listing in replica.list_all().values() for f in listing.files}


def test_retention_keeps_every_file_the_bucket_lacks_and_removes_the_shipped_ones(tmp_path: Path) -> None:
    replica = compacted_replica(tmp_path / "shipped")
    control = Replica(tmp_path / "control")
    shutil.copytree(replica.root, control.root)
    later = time.time() + 10
    doomed = {shipped_key(f) for f in plan_retention(replica.list_all(), AT_ONCE.retention, later)}
    assert len(doomed) >= 4, "the replica has files retention removes"

    # Control: no remote, the plan is carried out.
    removed = janitor_pass(control, AT_ONCE, later, shipped=None)
    assert removed.retention_removed == len(doomed)
    assert files(control) == files(replica) - doomed

    # The bucket holds nothing yet (unreachable since the start): every file stays.
    before = files(replica)
    kept = janitor_pass(replica, AT_ONCE, later, shipped=read_shipped(replica))
    assert kept.retention_removed == 0 and kept.held_for_remote == len(doomed)
    assert files(replica) == before
    assert kept.due == later, "a replica holding files for the bucket is looked at again next round"

    # The bucket got half of them: those go, the rest stay.
    half = set(sorted(doomed)[: len(doomed) // 2])
    write_shipped(replica, (before - doomed) | half)
    assert read_shipped(replica) == (before - doomed) | half
    partly = janitor_pass(replica, AT_ONCE, later, shipped=read_shipped(replica))
    assert partly.retention_removed == len(half) and partly.held_for_remote == len(doomed) - len(half)
    assert files(replica) == before - half

    # Everything shipped: the replica ends as the control did.
    write_shipped(replica, before)
    janitor_pass(replica, AT_ONCE, later, shipped=read_shipped(replica))
    assert files(replica) == files(control)


def test_a_damaged_record_only_keeps_more(tmp_path: Path) -> None:
    replica = compacted_replica(tmp_path / "r")
    before = files(replica)
    write_shipped(replica, before)
    record = Path(replica.root) / ".ltxpool-remote" / "shipped"
    record.write_text("garbage\n0 zz 1 2\n" + record.read_text()[: len(record.read_text()) // 3])
    shipped = read_shipped(replica)
    assert shipped < before
    report = janitor_pass(replica, AT_ONCE, time.time() + 10, shipped=shipped)
    assert before - files(replica) <= shipped, "only files the record names were removed"
    assert report.held_for_remote > 0
