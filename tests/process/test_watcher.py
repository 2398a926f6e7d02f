"""The watcher layer alone: real forked children running tiny role functions."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

import pytest

from ltxpool.pool.child import ChildLink, ChildProcess
from ltxpool.pool.errors import CrashLoop
from ltxpool.pool.events import Heartbeat
from ltxpool.pool.watcher import RestartPolicy, Watcher

FORK = multiprocessing.get_context("fork")


def raises(link: ChildLink) -> None:
    raise ValueError("boom")


def sleeps_until_stopped(link: ChildLink) -> None:
    while not link.stopping:
        link.sleep(10)


def never_reports(link: ChildLink) -> None:
    time.sleep(60)


def watcher_of(target: Callable[[ChildLink], None], count: int, policy: RestartPolicy,
               **hooks: Callable[[str], None]) -> Watcher:
    return Watcher("worker", count, lambda name, index: ChildProcess(FORK, name, target, (), 0.1), policy, **hooks)


def run_until(watcher: Watcher, done: Callable[[], bool], timeout: float = 10.0, stopping: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        wake = watcher.reconcile(time.monotonic(), stopping)
        ready = wait(watcher.wait_objects(), min(max(wake - time.monotonic(), 0.0), 0.05))
        watcher.receive(ready)


def test_a_raising_role_restarts_with_doubling_backoff_until_the_crash_loop_names_its_error() -> None:
    starts: list[float] = []
    policy = RestartPolicy(backoff=0.05, backoff_max=1.0, crash_loop_restarts=3, crash_loop_window=60.0)
    watcher = watcher_of(raises, 1, policy, on_restart=lambda role: starts.append(time.monotonic()))
    with pytest.raises(CrashLoop) as caught:
        run_until(watcher, lambda: False)
    assert str(caught.value) == "worker-0 crashed 4 times within 60 s (last: exit code 1: ValueError: boom)"
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert len(starts) == 3
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2


def test_a_child_silent_past_the_hang_timeout_is_killed_and_counted_as_a_crash() -> None:
    hung: list[str] = []
    watcher = watcher_of(never_reports, 1, RestartPolicy(hang_timeout=0.3, backoff=5.0),
                         on_hang_kill=hung.append)
    run_until(watcher, lambda: bool(watcher.slots) and watcher.slots[0].crashed)
    assert hung == ["worker"]
    assert len(watcher.slots[0].crashes) == 1
    assert watcher.running() == 0


def test_lowering_the_count_stops_the_extra_child_gracefully_and_restarts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ltxpool.supervisor")
    restarts: list[str] = []
    watcher = watcher_of(sleeps_until_stopped, 2, RestartPolicy(), on_restart=restarts.append)
    run_until(watcher, lambda: watcher.running() == 2)
    extra = watcher.slots[1].child
    assert extra is not None
    watcher.count = 1
    run_until(watcher, lambda: len(watcher.slots) == 1)
    assert f"worker-1 (pid {extra.pid}) stopped: exit code 0" in caplog.messages
    assert watcher.running() == 1 and restarts == []
    watcher.stop_all()
    run_until(watcher, lambda: watcher.running() == 0, stopping=True)


def start_a_child_and_die(conn: Connection) -> None:
    child = ChildProcess(FORK, "worker-0", sleeps_until_stopped, (), 0.1)
    child.start()
    conn.send(child.pid)
    os._exit(0)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1] == "Z" for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_a_child_whose_supervisor_dies_right_after_forking_it_stops_by_itself() -> None:
    reader, writer = FORK.Pipe(duplex=False)
    supervisor = FORK.Process(target=start_a_child_and_die, args=(writer,))
    supervisor.start()
    orphan = reader.recv()
    supervisor.join(10)
    deadline = time.monotonic() + 10
    while not _gone(orphan):
        if time.monotonic() > deadline:
            os.kill(orphan, signal.SIGKILL)
            raise AssertionError("the orphaned child kept running")
        time.sleep(0.05)


def busy_then_retrying(link: ChildLink) -> None:
    link.busy("shipping /srv/ltx/a", replica="/srv/ltx/a")
    link.still_busy()
    while not link.stopping:
        time.sleep(0.05)


def busy_then_heartbeat(link: ChildLink) -> None:
    link.busy("shipping /srv/ltx/a", replica="/srv/ltx/a")
    link.send(Heartbeat())
    while not link.stopping:
        time.sleep(0.05)


@pytest.mark.parametrize("role, doing, replica", [
    (busy_then_retrying, "shipping /srv/ltx/a", "/srv/ltx/a"),
    (busy_then_heartbeat, "idle", ""),
])
def test_a_child_still_busy_on_its_item_keeps_it_named_so_a_death_there_is_charged_to_its_replica(
    role: Callable[[ChildLink], None], doing: str, replica: str,
) -> None:
    """Control: a plain heartbeat in the middle of the item reads as idle, and a death would be
    charged to the pool instead of the replica."""
    child = ChildProcess(FORK, "shipper", role, (), 0.1)
    child.start()
    try:
        events: list[object] = []
        deadline = time.monotonic() + 10
        while len(events) < 2:
            assert time.monotonic() < deadline, f"only {events} arrived"
            assert child.conn is not None
            wait([child.conn], 0.1)
            events += child.receive()
        assert (child.doing, child.replica) == (doing, replica)
    finally:
        child.signal(signal.SIGTERM)
        child.process.join(10)
        child.close()
