"""When a worker steps each database of its share: on change, at most once per interval, nothing lost."""

from __future__ import annotations

import math

from ltxpool.discovery import Target
from ltxpool.pool.replication import DatabaseQueue


def queue_with(*names: str, interval: float = 1.0) -> DatabaseQueue:
    queue = DatabaseQueue(claim_retry=5.0, failure_backoff_max=60.0)
    for name in names:
        queue.add(Target(f"/db/{name}", f"/ltx/{name}", interval), 100.0)
    return queue


def test_a_found_database_is_due_at_once_and_an_unchanged_one_never_again() -> None:
    queue = queue_with("a")
    entry = queue.pop_due(100.0)
    assert entry is not None and entry.target.database == "/db/a" and entry.seen_at == 100.0
    queue.stepped(entry, 100.0)
    assert queue.pop_due(10_000.0) is None and queue.wake_at() == math.inf


def test_changes_within_one_interval_make_one_step_one_interval_after_the_last() -> None:
    queue = queue_with("a")
    entry = queue.pop_due(100.0)
    assert entry is not None
    queue.stepped(entry, 100.0)
    for now in (100.1, 100.2, 100.5):
        queue.changed("/db/a", now)
    assert queue.pop_due(100.9) is None and queue.wake_at() == 101.0
    entry = queue.pop_due(101.0)
    assert entry is not None and entry.seen_at == 100.1, "the oldest change seen is what the lag counts from"
    assert queue.pop_due(101.0) is None


def test_a_change_seen_while_the_step_ran_stays_pending() -> None:
    queue = queue_with("a")
    entry = queue.pop_due(100.0)
    assert entry is not None
    queue.changed("/db/a", 100.05)  # read from the kernel while the step started at 100.0 ran
    queue.stepped(entry, 100.0)
    entry = queue.pop_due(101.0)
    assert entry is not None and entry.seen_at == 100.0, "pending, and its lag counted from the step's start"


def test_failures_back_off_and_keep_what_was_seen_and_a_success_resets() -> None:
    queue = queue_with("a", interval=1.0)
    entry = queue.pop_due(100.0)
    assert entry is not None
    assert queue.failed(entry, 100.0) == 2.0
    queue.changed("/db/a", 100.5)
    assert queue.pop_due(101.9) is None, "a change does not cut the backoff short"
    entry = queue.pop_due(102.0)
    assert entry is not None and entry.seen_at == 100.0
    assert queue.failed(entry, 102.0) == 4.0
    entry = queue.pop_due(106.0)
    assert entry is not None
    queue.stepped(entry, 106.0)
    assert entry.failures == 0 and entry.seen_at is None


def test_a_held_off_database_waits_and_a_removed_one_is_never_due() -> None:
    queue = queue_with("a", "b")
    queue.hold_off("/db/a", 130.0)
    queue.remove("/db/b")
    assert queue.pop_due(129.0) is None
    entry = queue.pop_due(130.0)
    assert entry is not None and entry.target.database == "/db/a"
    assert len(queue) == 1 and "/db/b" not in queue
