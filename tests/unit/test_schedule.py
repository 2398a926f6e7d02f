"""A worker's schedule: idle replicas cost a stat, new level-0 files are noticed, ties start at the offset."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from ltxpool.locks.claim import Claim
from ltxpool.pool import schedule as schedule_module
from ltxpool.pool.schedule import ReplicaSchedule
from ltxpool.replica.compactor import CompactionSettings, compact_level, compaction_pass
from ltxpool.replica.layout import Replica
from tests.support.synthetic import SyntheticStream

DUE_NOW = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
SLOW = CompactionSettings(intervals={1: 0.0, 2: 3600.0, 3: 3600.0}, snapshot_interval=86400.0)


def compacted_streams(tmp_path: Path, count: int) -> list[SyntheticStream]:
    made = []
    for index in range(count):
        stream = SyntheticStream(Replica(tmp_path / f"r{index}"), seed=index)
        stream.run(2)
        compaction_pass(stream.replica, DUE_NOW, time.time())
        settle(stream.replica)
        made.append(stream)
    return made


def settle(replica: Replica) -> None:
    """Date level 0 back, as if its last change were long ago (not racily recent)."""
    past = time.time() - 60
    os.utime(replica.level_dir(0), (past, past))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The roots that ``next_due`` listed, in order."""
    seen: list[str] = []
    real = schedule_module.next_due

    def counting(replica: Replica, settings: CompactionSettings, now: float) -> float:
        seen.append(replica.root)
        return real(replica, settings, now)

    monkeypatch.setattr(schedule_module, "next_due", counting)
    return seen


def test_idle_replicas_are_only_stat_ed_and_a_new_level_0_file_makes_its_replica_due(
    tmp_path: Path, listings: list[str]
) -> None:
    streams = compacted_streams(tmp_path, 3)
    schedule = ReplicaSchedule([s.replica for s in streams], SLOW)
    now = time.time()
    schedule.rescan(now)
    assert schedule.pop_due(now) is None and schedule.wake_at() == schedule.next_poll
    listings.clear()
    assert schedule.poll(now) == 0 and listings == []
    streams[1].transaction()
    assert schedule.poll(time.time()) == 1 and listings == [streams[1].replica.root]
    due = schedule.pop_due(time.time())
    assert due is not None and due[0] == 1


def test_a_level_0_directory_changed_under_a_second_ago_is_looked_at_again(tmp_path: Path, listings: list[str]) -> None:
    streams = compacted_streams(tmp_path, 1)
    os.utime(streams[0].replica.level_dir(0))
    schedule = ReplicaSchedule([streams[0].replica], SLOW)
    schedule.rescan(time.time())
    listings.clear()
    assert schedule.poll(time.time()) == 1
    settle(streams[0].replica)
    assert schedule.poll(time.time()) == 1
    assert schedule.poll(time.time()) == 0
    assert len(listings) == 2


def test_replicas_due_at_the_same_time_come_out_starting_at_the_workers_offset(tmp_path: Path) -> None:
    replicas = []
    for index in range(4):
        stream = SyntheticStream(Replica(tmp_path / f"r{index}"), seed=index)
        stream.run(2)
        replicas.append(stream.replica)
    schedule = ReplicaSchedule(replicas, DUE_NOW, offset=2)
    now = time.time()
    schedule.rescan(now)
    order = []
    while (due := schedule.pop_due(now)) is not None:
        order.append(due[0])
    assert order == [2, 3, 0, 1]


def test_a_pass_that_found_the_level_claimed_waits_claim_retry_before_trying_again(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "r"), seed=1)
    stream.run(2)
    replica = stream.replica
    assert compact_level(replica, 9) is not None
    stream.run(1)  # level 1 has work only after the snapshot (#14)
    schedule = ReplicaSchedule([replica], SLOW, claim_retry=5.0)
    now = time.time()
    schedule.rescan(now)
    assert schedule.pop_due(now) == (0, now)
    with Claim(replica.ensure_level_dir(1)) as other_worker, other_worker.held() as mine:
        assert mine
        assert compaction_pass(replica, SLOW, now) == []
        schedule.finished(0, now, progressed=False)
    assert schedule.due(0) == now + 5.0
    assert schedule.pop_due(now + 4.9) is None
    assert schedule.pop_due(now + 5.0) == (0, now + 5.0)


def test_failed_passes_are_retried_later_each_time(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "r"), seed=1)
    stream.run(1)
    schedule = ReplicaSchedule([stream.replica], SLOW, poll_interval=0.5, failure_backoff_max=1.5)
    assert [schedule.failed(0, 100.0) for _ in range(3)] == [1.0, 1.5, 1.5]
    assert schedule.due(0) == 101.5
    schedule.finished(0, 200.0, progressed=True)
    assert schedule.due(0) == 200.0 and not math.isinf(schedule.due(0))


def test_a_sibling_holding_the_claim_does_not_end_the_failure_backoff(tmp_path: Path) -> None:
    """Two workers taking turns on a replica that fails: the one finding it claimed must not reset the count."""
    stream = SyntheticStream(Replica(tmp_path / "r"), seed=1)
    stream.run(2)
    schedule = ReplicaSchedule([stream.replica], DUE_NOW, poll_interval=0.5)
    assert [schedule.failed(0, 100.0) for _ in range(2)] == [1.0, 2.0]
    schedule.finished(0, 103.0, progressed=False)  # still due, nothing done: claimed by the failing sibling
    assert schedule.failed(0, 104.0) == 4.0
    schedule.finished(0, 110.0, progressed=True)
    assert schedule.failed(0, 111.0) == 1.0


def test_replica_holds_double_per_death_and_start_again_after_a_success() -> None:
    holds = schedule_module.ReplicaHolds(first=1.0, longest=5.0, forget=100.0)
    assert [holds.charge("/r", 10.0) for _ in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert holds.remaining(12.0) == {"/r": 3.0}
    assert holds.remaining(15.0) == {}
    holds.clear("/r")
    assert holds.charge("/r", 20.0) == 1.0
    assert holds.charge("/r", 200.0) == 1.0  # a death long after the last starts the count again


def test_a_hold_handed_down_keeps_a_due_replica_waiting(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "r"), seed=1)
    stream.run(2)
    schedule = ReplicaSchedule([stream.replica], DUE_NOW)
    schedule.hold_off(0, 150.0)
    schedule.rescan(100.0)
    assert schedule.pop_due(149.0) is None
    assert schedule.pop_due(150.0) == (0, 150.0)
