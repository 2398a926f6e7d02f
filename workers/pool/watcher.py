"""N copies of one role (``worker-0..N-1``, or the one ``janitor``) and their restart policy.

The heart is :meth:`Watcher.reconcile`, an idempotent pass as in circus: reap the
children that died (log how, count it, schedule the restart), kill the ones that hang,
start whatever is missing once its backoff has passed, stop the extras. Call it as
often as you like; it only acts on what changed.

Restart policy, per slot: the n-th crash within ``crash_loop_window`` seconds waits
``backoff * 2**(n-1)`` (at most ``backoff_max``) before the restart; more than
``crash_loop_restarts`` crashes within the window is a crash loop, and the
supervisor gives up (:class:`CrashLoop`) rather than spin forever. A child that
exits because the supervisor asked it to (stop, reload, shrink) did not crash.

Hang policy: a child that has sent nothing for ``hang_timeout`` seconds is killed
(SIGKILL) and restarted like a crash. Idle children send a heartbeat every few
seconds and a busy one announces each item, so "silent for that long" means stuck on
one item; the kill is logged with the item.

One replica never stops the pool (issue 13): a child that dies or is killed while
busy on one replica (its last ``Busy`` named it) is charged to that replica, not to
the slot. ``on_replica_death`` puts the replica on hold (its own exponential
backoff, logged) and the slot restarts after the first backoff step, its crash
count untouched; only deaths tied to no replica make a crash loop.
(``isolate_replicas=False`` is for tests only: the behaviour before, to show that
this is what keeps the pool up.)

A failed fork (``SpawnError``: EAGAIN under a task limit) is no crash either: the
slot tries again after its own backoff, logged each time, until the fork succeeds.
"""

from __future__ import annotations

import logging
import math
import signal
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from ltxpool.pool.child import ChildProcess, describe_exit
from ltxpool.pool.errors import CrashLoop, SpawnError
from ltxpool.pool.events import Event

__all__ = ["RestartPolicy", "CrashLoop", "Slot", "Watcher"]

log = logging.getLogger("ltxpool.supervisor")


@dataclass(frozen=True)
class RestartPolicy:
    backoff: float = 0.5
    backoff_max: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 60.0
    hang_timeout: float = 900.0
    isolate_replicas: bool = True

    def delay(self, recent_crashes: int) -> float:
        """Seconds before restarting a child that has crashed ``recent_crashes`` times lately."""
        return min(self.backoff * 2.0 ** max(recent_crashes - 1, 0), self.backoff_max)

    @property
    def heartbeat_interval(self) -> float:
        """How often an idle child says it is alive: well inside the hang deadline."""
        return min(5.0, self.hang_timeout / 4)


@dataclass
class Slot:
    """One place in a role: its current child, its crash history, when it may start again."""

    name: str
    child: ChildProcess | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float = 0.0
    asked_to_stop: bool = False
    hang_killed: bool = False
    crashed: bool = False
    failed_forks: int = 0


class Watcher:
    """Keeps ``count`` children of one role running; ``spawn(name, index)`` makes an unstarted one."""

    def __init__(self, role: str, count: int, spawn: Callable[[str, int], ChildProcess], policy: RestartPolicy,
                 on_restart: Callable[[str], None] | None = None,
                 on_hang_kill: Callable[[str], None] | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 on_replica_death: Callable[[str, float], float] | None = None) -> None:
        self.role = role
        self.count = count
        self.spawn = spawn
        self.policy = policy
        self._on_restart = on_restart
        self._on_hang_kill = on_hang_kill
        self._on_event = on_event
        self._on_replica_death = on_replica_death
        self.slots: list[Slot] = []

    def _name(self, index: int) -> str:
        # The one-of-a-kind roles go by their role's name: ltx:janitor, ltx:shipper.
        return self.role if self.count == 1 and self.role in ("janitor", "shipper") else f"{self.role}-{index}"

    def children(self) -> list[ChildProcess]:
        return [slot.child for slot in self.slots if slot.child is not None]

    def wait_objects(self) -> list[Connection | int]:
        """Sentinels and event pipes, for ``multiprocessing.connection.wait``."""
        objects: list[Connection | int] = []
        for child in self.children():
            objects.append(child.sentinel)
            if child.conn is not None:
                objects.append(child.conn)
        return objects

    def receive(self, ready: Collection[object]) -> None:
        """Take in the events of every child whose pipe or sentinel is in ``ready``."""
        for child in self.children():
            if child.conn in ready or child.sentinel in ready:
                self._deliver(child)

    def _deliver(self, child: ChildProcess) -> None:
        for event in child.receive():
            if self._on_event is not None:
                self._on_event(event)

    def reconcile(self, now: float, stopping: bool = False) -> float:
        """Reap, kill the hung, start the missing, stop the extras; returns when to call again."""
        while len(self.slots) < self.count:
            self.slots.append(Slot(self._name(len(self.slots))))
        wake = math.inf
        for index, slot in enumerate(self.slots):
            child = slot.child
            if child is not None and not child.alive():
                self._reap(slot, child, now, stopping or index >= self.count)
                child = None
            if child is not None:
                if index >= self.count and not slot.asked_to_stop:
                    self.stop(slot)
                elif not stopping and not slot.hang_killed:
                    deadline = child.last_heard + self.policy.hang_timeout
                    if now >= deadline:
                        self._kill_hung(slot, child, now)
                    else:
                        wake = min(wake, deadline)
            elif not stopping and index < self.count:
                if now >= slot.restart_at:
                    started = self._start(slot, index, now)
                    wake = min(wake, now + self.policy.hang_timeout if started else slot.restart_at)
                else:
                    wake = min(wake, slot.restart_at)
        del self.slots[self._needed_slots():]
        return wake

    def _needed_slots(self) -> int:
        """Slots past ``count`` go once their child is gone."""
        keep = self.count
        for index in range(len(self.slots) - 1, self.count - 1, -1):
            if self.slots[index].child is not None:
                keep = index + 1
                break
        return keep

    def _start(self, slot: Slot, index: int, now: float) -> bool:
        """Start the slot's child; a failed fork is retried after a backoff (returns False)."""
        child = self.spawn(slot.name, index)
        try:
            child.start()
        except SpawnError as exc:
            slot.failed_forks += 1
            delay = self.policy.delay(slot.failed_forks)
            slot.restart_at = now + delay
            log.error("could not start %s: %s (failed %d times in a row; retrying in %.1f s)",
                      slot.name, exc, slot.failed_forks, delay)
            return False
        if slot.failed_forks:
            log.info("%s: fork succeeded after %d failures", slot.name, slot.failed_forks)
            slot.failed_forks = 0
        slot.child = child
        if slot.crashed:
            log.info("%s restarted (pid %d)", slot.name, child.pid)
            if self._on_restart is not None:
                self._on_restart(self.role)
        else:
            log.info("%s started (pid %d)", slot.name, child.pid)
        slot.asked_to_stop = slot.hang_killed = slot.crashed = False
        return True

    def _reap(self, slot: Slot, child: ChildProcess, now: float, stopping: bool) -> None:
        how = describe_exit(child.exitcode)
        self._deliver(child)
        child.close()
        slot.child = None
        if slot.asked_to_stop or stopping:
            log.info("%s (pid %d) stopped: %s", slot.name, child.pid, how)
            slot.restart_at = now
            return
        slot.crashed = True
        last = how if child.last_error is None else f"{how}: {child.last_error}"
        if slot.hang_killed:
            last = f"{how}: hung on {child.doing}"
        if child.replica and self.policy.isolate_replicas and self._on_replica_death is not None:
            held = self._on_replica_death(child.replica, now)
            slot.restart_at = now + self.policy.backoff
            log.warning("%s (pid %d) died (%s); charged to replica %s, held off for %.1f s, not to the pool; "
                        "restarting in %.1f s", slot.name, child.pid, last, child.replica, held, self.policy.backoff)
            return
        slot.crashes.append(now)
        while slot.crashes and slot.crashes[0] < now - self.policy.crash_loop_window:
            slot.crashes.popleft()
        if len(slot.crashes) > self.policy.crash_loop_restarts:
            raise CrashLoop(slot.name, len(slot.crashes), self.policy.crash_loop_window, last)
        delay = self.policy.delay(len(slot.crashes))
        slot.restart_at = now + delay
        log.warning("%s (pid %d) died (%s); restarting in %.1f s", slot.name, child.pid, last, delay)

    def _kill_hung(self, slot: Slot, child: ChildProcess, now: float) -> None:
        log.error("%s (pid %d) silent for %.0f s while %s: killing it (hang_timeout %g s)",
                  slot.name, child.pid, now - child.last_heard, child.doing, self.policy.hang_timeout)
        slot.hang_killed = True
        child.signal(signal.SIGKILL)
        if self._on_hang_kill is not None:
            self._on_hang_kill(self.role)

    def stop(self, slot: Slot) -> None:
        """Ask one child to finish what it is doing and exit (SIGTERM)."""
        if slot.child is not None:
            slot.asked_to_stop = True
            slot.child.signal(signal.SIGTERM)

    def stop_all(self) -> None:
        for slot in self.slots:
            self.stop(slot)

    def kill_all(self) -> list[ChildProcess]:
        """SIGKILL every child still running; returns them (for the log and the cleanup)."""
        killed = []
        for slot in self.slots:
            if slot.child is not None and slot.child.alive():
                slot.asked_to_stop = True
                slot.child.signal(signal.SIGKILL)
                killed.append(slot.child)
        return killed

    def running(self) -> int:
        return sum(1 for slot in self.slots if slot.child is not None)
