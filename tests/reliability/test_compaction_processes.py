"""Compaction under real concurrency and real SIGKILLs: nothing partial, nothing lost."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from ltxpool.ltx import verify_file
from ltxpool.replica.compactor import CompactionSettings, compaction_pass
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import SNAPSHOT_LEVEL, Replica
from ltxpool.replica.plan import coverage_gaps, level_problems, plan_restore
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from tests.support.helpers import FORK
from tests.support.synthetic import SyntheticStream

FAST = CompactionSettings(intervals={1: 0.02, 2: 0.1, 3: 0.3}, snapshot_interval=0.5)
QUICK_RETENTION = JanitorSettings(
    retention=RetentionPolicy(level_retention={0: 0.2, 1: 0.5, 2: 0.5, 3: 0.5}, snapshot_retention=1.0)
)


def worker_loop(roots: list[str], index: int, stop) -> None:
    replicas = [Replica(root) for root in roots]
    rotation = index % len(replicas)
    while not stop.is_set():
        for replica in replicas[rotation:] + replicas[:rotation]:
            # The test process forked the workers: it is their supervisor, they are one pool.
            compaction_pass(replica, FAST, time.time(), pool=os.getppid())
        time.sleep(0.005)


def janitor_loop(roots: list[str], stop) -> None:
    verified: set = set()
    while not stop.is_set():
        for root in roots:
            janitor_pass(Replica(root), QUICK_RETENTION, time.time(), verified)
        time.sleep(0.02)


def assert_replica_whole(stream: SyntheticStream, tmp_path: Path) -> None:
    listings = stream.replica.list_all()
    for level, listing in listings.items():
        for f in listing.files:
            verify_file(f.path)
        if level != SNAPSHOT_LEVEL:
            assert [p for p in level_problems(listing) if p.startswith("overlap")] == []
        temps = [n for n in os.listdir(stream.replica.level_dir(level)) if n.endswith(".tmp")] if os.path.isdir(
            stream.replica.level_dir(level)) else []
        assert temps == [], f"orphan temp files at level {level}: {temps}"
    assert coverage_gaps(listings) == []
    plan = plan_restore(listings)
    assert plan.problems == [] and plan.max_txid == stream.txid
    output = tmp_path / f"latest-{os.path.basename(stream.replica.root)}.db"
    restore(stream.replica, output, check_integrity=False)
    assert output.read_bytes() == stream.images[stream.txid]


def test_four_workers_and_a_janitor_on_three_replicas_leave_no_gap_no_overlap_no_orphan(tmp_path: Path) -> None:
    streams = [SyntheticStream(Replica(tmp_path / f"replica-{i}"), seed=100 + i) for i in range(3)]
    for stream in streams:
        stream.run(1)
    roots = [stream.replica.root for stream in streams]
    stop = FORK.Event()
    children = [FORK.Process(target=worker_loop, args=(roots, i, stop)) for i in range(4)]
    children.append(FORK.Process(target=janitor_loop, args=(roots, stop)))
    for process in children:
        process.start()
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        random.choice(streams).transaction()
        time.sleep(0.003)
    stop.set()
    for process in children:
        process.join(30)
        assert process.exitcode == 0
    for stream in streams:
        janitor_pass(stream.replica, JanitorSettings(), time.time())
        assert_replica_whole(stream, tmp_path)
        assert stream.replica.list_level(3).files, "the run was long enough to reach level 3"


def compact_forever(root: str) -> None:
    replica = Replica(root)
    settings = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
    while True:
        compaction_pass(replica, settings, time.time(), pool=os.getppid())


def test_a_worker_sigkilled_at_random_moments_never_leaves_a_partial_file_or_loses_a_range(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=42, page_size=4096)
    stream.run(3)
    rng = random.Random(1)
    kills = 0
    for _ in range(120):
        worker = FORK.Process(target=compact_forever, args=(stream.replica.root,))
        worker.start()
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        kills += worker.exitcode == -signal.SIGKILL
        stream.transaction()
    assert kills >= 100
    for listing in stream.replica.list_all().values():
        for f in listing.files:
            verify_file(f.path)
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.quarantined == 0
    assert report.orphans_removed > 0, "no kill landed mid-write, so the test did not exercise the writer"
    compaction_pass(stream.replica, CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0),
                    time.time())
    assert_replica_whole(stream, tmp_path)
