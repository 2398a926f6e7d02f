"""The continuous replicate loop: a step every interval, a good neighbour in between.

What the app sees of a running replicate, and why:

* **Its checkpoints complete.** Between steps replicate may hold a read transaction
  (the pin, ``ltxpool.replicate.sqlite_source``), which a FULL, RESTART or TRUNCATE checkpoint
  waits for while it blocks the app's writers. Replicate watches the wal-index locks
  and lets go the moment such a checkpoint waits (``wait_between_steps``); the next
  step then proves completeness anew, and compares every page if it cannot.
* **Its WAL stays small.** While pinned, the app's own checkpoints stop at our read
  mark, so replicate steps early once the WAL has grown by ``checkpoint_frames``
  frames and runs a PASSIVE checkpoint itself past that size (as Litestream does).
* **It can leave WAL mode and delete its WAL.** Any open connection of ours, even an
  idle one, makes ``PRAGMA journal_mode=delete`` fail and keeps the last close from
  deleting the WAL. So once the database has been idle for ``IDLE_RELEASE`` seconds
  replicate closes its connections after every step. Where the WAL holds frames that
  costs nothing: the next step's proof is the verified frame prefix. Where the WAL is
  empty, only a connection held since the last step proves "no commit since", so
  letting go costs the next step a full compare; it is done no more often than
  keeps those compares under ``1 / FULL_COMPARE_BUDGET`` of the time.
* **A busy replica is a pause, not a hang.** A step waits for level 0's directory
  lock at most its lock timeout, outside SQLite; the timeout is reported as a
  problem naming the holder (pid, user, command) and recorded for ``ltxpool
  status``, and the next interval tries again.
* **A missing database is a pause, not an exit.** A deploy that replaces the file,
  or a moment without it, is retried every interval; the problem is reported once,
  then every ``PROBLEM_REPEAT`` seconds, and recorded for ``ltxpool status`` until a
  step succeeds again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ltxpool.locks.errors import LockTimeout
from ltxpool.replicate.errors import DatabaseBusyError, SourceError
from ltxpool.replicate.replicator import Replicator, StepResult
from ltxpool.replicate.sqlite_source import WalPosition

__all__ = ["LoopEvent", "replicate_continuously", "IDLE_RELEASE", "FULL_COMPARE_BUDGET", "PROBLEM_REPEAT"]

#: Seconds without a change after which replicate stops holding connections between steps.
IDLE_RELEASE = 2.0
#: Letting go of an empty WAL costs a full compare: at most one per this many times its duration.
FULL_COMPARE_BUDGET = 20.0
#: A problem that persists is reported again after this many seconds.
PROBLEM_REPEAT = 60.0


@dataclass(frozen=True)
class LoopEvent:
    """What the loop tells its caller: a file written, a busy database, a problem, a recovery."""

    kind: str  # "written" | "busy" | "problem" | "recovered" | "yielded"
    message: str
    result: StepResult | None = None


class _Neighbour:
    """Decides, after each step, whether replicate keeps its connections until the next."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator
        self.changed_at = time.monotonic()
        self.full_compare_at = 0.0
        self.full_compare_seconds = 0.0

    def after_step(self, result: StepResult | None) -> None:
        now = time.monotonic()
        compare = self.replicator.last_full_compare
        if compare is not None:
            self.full_compare_at, self.full_compare_seconds = compare
        if result is not None:
            self.changed_at = now
            return
        source = self.replicator.source
        if not source.pinned or now - self.changed_at < IDLE_RELEASE:
            return
        position = self.replicator.state.position
        # Frames in the WAL keep the proof alive without us; an empty WAL needs a full
        # compare after we let go, so that is allowed only within the budget.
        wal_holds_frames = isinstance(position, WalPosition) and position.frames > 0
        within_budget = now - self.full_compare_at >= FULL_COMPARE_BUDGET * self.full_compare_seconds
        if wal_holds_frames or within_budget:
            source.disconnect()


def replicate_continuously(
    replicator: Replicator, interval: float, stop: threading.Event, report: Callable[[LoopEvent], None]
) -> None:
    """Step every ``interval`` seconds until ``stop`` is set (the step in progress finishes)."""
    neighbour = _Neighbour(replicator)
    problem_since: float | None = None
    reported_at = 0.0
    while not stop.is_set():
        try:
            result = replicator.step()
        except DatabaseBusyError as exc:
            report(LoopEvent("busy", f"{exc}; retrying"))
        except (SourceError, LockTimeout) as exc:
            now = time.monotonic()
            if problem_since is None:
                problem_since = time.time()
                replicator.store.record_problem(str(exc), problem_since)
            if now - reported_at >= PROBLEM_REPEAT or reported_at == 0.0:
                report(LoopEvent("problem", f"{exc}; retrying every {interval:g} s"))
                reported_at = now
        else:
            if problem_since is not None:
                replicator.store.clear_problem()
                report(LoopEvent("recovered", f"{replicator.database}: readable again after "
                                              f"{time.time() - problem_since:.1f} s"))
                problem_since, reported_at = None, 0.0
            if result is not None:
                report(LoopEvent("written", "", result))
            neighbour.after_step(result)
        if replicator.source.wait_between_steps(stop, interval):
            report(LoopEvent("yielded", "let go of the WAL for a checkpoint of the app"))
