"""When each replica next needs a compaction pass, as one worker sees it.

A pool watches hundreds of replicas; listing every level of every replica every
second would cost more than the compactions. So each replica has a due time from
``next_due`` (computed from one listing, infinite when nothing is pending) and sits
in a heap: a worker sleeps until the earliest due time and touches nothing else.

What can make an idle replica due is new level-0 files, written by someone else
(Litestream, ``ltxpool replicate``). Those are noticed by ``stat`` of each
``ltx/0`` directory every ``poll_interval`` (~2.5 us each): a changed mtime means a
file came or went, and only then is that replica listed again. Directory mtimes
have the kernel's coarse clock granularity (a few ms), so two renames within one
tick show one mtime; as git does with "racily clean" entries, a directory whose
mtime is under a second old is looked at again on the next poll.

Replicas of the pool's own ``[[databases]]`` are not polled: the worker that
replicates a database is the one that compacts its replica, and it re-plans the
replica itself after each file it writes (``touch``) -- nor rescanned: listing
thousands of idle replicas every ``rescan_interval`` would be the idle cost again,
and no one else writes their level 0 (a manual ``replicate`` of one is planned
at the worker's next start). Replicas come and go as
databases are found and retired (``add``, ``retire``); a retired position is not
looked at again until ``add`` gives it to the next replica that joins.

Higher levels only gain inputs from compactions, and the worker that compacted
recomputes the due time itself; a full recomputation every ``rescan_interval``
covers whatever else (another worker that died mid-way, a foreign writer).

Ties are broken by the worker's own order, which starts at an offset set by its
index, so that N workers facing the same due replicas start at different places
and seldom race for the same claim. A pass that did nothing while its replica is
still due means another worker holds the claim: that replica is left alone for
``claim_retry`` seconds (default: one poll interval; the holder plans its own next
pass, so this is only the fallback should the holder die mid-way). A pass that failed backs off exponentially up to
``failure_backoff_max``.

A child that *died* on a replica (crashed, or was killed as hung) cannot back off
by itself: its schedule died with it. The supervisor keeps :class:`ReplicaHolds`
for that -- per replica, an exponential hold-off charged at each such death -- and
hands each new child what is left of every hold (``hold_off``), so one replica
that kills its workers is visited ever more rarely while the others go on.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from ltxpool.errors import LtxpoolError
from ltxpool.replica.compactor import CompactionSettings, next_due
from ltxpool.replica.layout import Replica

__all__ = ["ReplicaSchedule", "ReplicaHolds"]

_RACY_NS = 1_000_000_000


class ReplicaHolds:
    """The supervisor's per-replica hold-offs after deaths charged to a replica (monotonic time).

    The n-th death within ``forget`` seconds holds the replica off for
    ``first * 2**(n-1)`` seconds, at most ``longest``; a pass that succeeds on it
    (:meth:`clear`) or ``forget`` seconds without a death start the count again.
    """

    def __init__(self, first: float = 1.0, longest: float = 300.0, forget: float = 3600.0) -> None:
        self.first, self.longest, self.forget = first, longest, forget
        self._deaths: dict[str, tuple[int, float]] = {}
        self._until: dict[str, float] = {}

    def charge(self, replica: str, now: float) -> float:
        """A child died while on ``replica``: hold it off; returns for how long."""
        count, last = self._deaths.get(replica, (0, now))
        count = 1 if now - last > self.forget else count + 1
        self._deaths[replica] = (count, now)
        delay = min(self.first * 2.0 ** (count - 1), self.longest)
        self._until[replica] = now + delay
        return delay

    def clear(self, replica: str) -> None:
        """A pass on ``replica`` succeeded: its next death starts from the first step again."""
        self._deaths.pop(replica, None)

    def remaining(self, now: float) -> dict[str, float]:
        """Seconds left of every hold still running: what a new child must respect."""
        return {replica: until - now for replica, until in self._until.items() if until > now}


class ReplicaSchedule:
    """Due times of ``replicas`` for one worker; all times are wall-clock seconds."""

    def __init__(self, replicas: Sequence[Replica], settings: CompactionSettings, *, offset: int = 0,
                 poll_interval: float = 1.0, rescan_interval: float = 300.0, claim_retry: float | None = None,
                 failure_backoff_max: float = 300.0) -> None:
        self.replicas = list(replicas)
        self.settings = settings
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.claim_retry = poll_interval if claim_retry is None else claim_retry
        self.failure_backoff_max = failure_backoff_max
        count = len(self.replicas)
        self._order = [(offset + k) % count for k in range(count)] if count else []
        self._rank = {position: rank for rank, position in enumerate(self._order)}
        self._level0 = [replica.level_dir(0) for replica in self.replicas]
        self._due = [math.inf] * count
        self._not_before = [0.0] * count
        self._failures = [0] * count
        self._version = [0] * count
        self._seen: list[int | None] = [None] * count
        self._settled = [False] * count
        self._polled = [True] * count
        self._retired = [False] * count
        #: Retired positions, given out again by ``add``.
        self._free: list[int] = []
        self._heap: list[tuple[float, int, int, int]] = []
        self.next_poll = 0.0
        self.next_rescan = 0.0

    def due(self, position: int) -> float:
        return self._due[position]

    def add(self, replica: Replica, now: float, *, polled: bool = False) -> int:
        """A replica that joins (a database found); planned at once. Returns its position.

        A retired position is given out again: short-lived apps that create and delete
        databases (one per job, or the same one again and again) would otherwise grow the
        schedule by one slot per database ever seen, for the worker's life.
        """
        if self._free:
            position = self._free.pop()
            self.replicas[position] = replica
            self._version[position] += 1
        else:
            position = len(self.replicas)
            self.replicas.append(replica)
            self._rank[position] = position
            self._order.append(position)
            self._version.append(0)
            # A slot in every column; each is set just below, for a new and a reused position alike.
            columns: tuple[list[Any], ...] = (self._level0, self._due, self._not_before, self._failures, self._seen,
                                              self._settled, self._polled, self._retired)
            for column in columns:
                column.append(None)
        self._level0[position] = replica.level_dir(0)
        self._due[position] = math.inf
        self._not_before[position] = 0.0
        self._failures[position] = 0
        self._seen[position] = None
        self._settled[position] = False
        self._polled[position] = polled
        self._retired[position] = False
        self.refresh(position, now)
        return position

    def retire(self, position: int) -> None:
        """The replica leaves (its database is gone): no pass, poll or rescan touches it again."""
        if self._retired[position]:
            return
        self._retired[position] = True
        self._due[position] = math.inf
        self._version[position] += 1
        self._free.append(position)

    def touch(self, position: int, now: float) -> None:
        """This worker wrote to the replica's level 0: plan it anew (instead of a poll)."""
        if not self._retired[position]:
            self.refresh(position, now)

    def _set(self, position: int, due: float) -> None:
        due = max(due, self._not_before[position])
        self._due[position] = due
        self._version[position] += 1
        if due != math.inf:
            heapq.heappush(self._heap, (due, self._rank[position], position, self._version[position]))

    def refresh(self, position: int, now: float) -> None:
        """List the replica once and file it under its next due time.

        A replica that cannot be listed is due now: the pass that follows meets the
        same error and reports it, with the failure backoff.
        """
        try:
            due = next_due(self.replicas[position], self.settings, now)
        except (LtxpoolError, OSError):
            due = now
        self._set(position, due)

    def _look(self, position: int, now_ns: int) -> bool:
        """Whether ``ltx/0`` changed since last seen (or may have: racily recent mtime)."""
        try:
            mtime: int | None = os.stat(self._level0[position]).st_mtime_ns
        except OSError:
            mtime = None
        changed = mtime != self._seen[position] or not self._settled[position]
        self._seen[position] = mtime
        self._settled[position] = mtime is None or now_ns - mtime >= _RACY_NS
        return changed

    def poll(self, now: float) -> int:
        """Re-plan the replicas whose level 0 changed; returns how many did."""
        now_ns = time.time_ns()
        changed = 0
        for position in self._order:
            if self._polled[position] and not self._retired[position] and self._look(position, now_ns):
                self.refresh(position, now)
                changed += 1
        self.next_poll = now + self.poll_interval
        return changed

    def rescan(self, now: float) -> None:
        """Re-plan every polled replica (at start, and every ``rescan_interval``)."""
        now_ns = time.time_ns()
        for position in self._order:
            if self._retired[position] or not self._polled[position]:
                continue
            self._look(position, now_ns)
            self.refresh(position, now)
        self.next_poll = now + self.poll_interval
        self.next_rescan = now + self.rescan_interval

    def maintain(self, now: float) -> None:
        """Run the rescan or the poll if its time has come."""
        if now >= self.next_rescan:
            self.rescan(now)
        elif now >= self.next_poll:
            self.poll(now)

    def _top(self) -> tuple[float, int] | None:
        while self._heap:
            due, _, position, version = self._heap[0]
            if version == self._version[position]:
                return due, position
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float) -> tuple[int, float] | None:
        """The replica whose pass is due first, with its due time, or None before then."""
        top = self._top()
        if top is None or top[0] > now:
            return None
        heapq.heappop(self._heap)
        due, position = top
        self._due[position] = math.inf
        self._version[position] += 1
        return position, due

    def wake_at(self) -> float:
        """When there is next something to do: a due replica, a poll or a rescan."""
        top = self._top()
        return min(top[0] if top is not None else math.inf, self.next_poll, self.next_rescan)

    def finished(self, position: int, now: float, progressed: bool) -> None:
        """After a pass: plan the next one. Still due with no progress: someone holds the claim.

        That someone may be a sibling failing on this very replica (waiting out a
        stranger's lock), so only a pass that progressed, or found nothing due, ends
        the failure backoff: otherwise N workers taking turns would each reset it.
        """
        self._not_before[position] = 0.0
        if self._retired[position]:
            return
        self.refresh(position, now)
        if self._due[position] <= now and not progressed:
            self._not_before[position] = now + self.claim_retry
            self._set(position, self._not_before[position])
        else:
            self._failures[position] = 0

    def hold_off(self, position: int, until: float) -> None:
        """No pass on this replica before ``until`` (a hold the supervisor handed down)."""
        self._not_before[position] = max(self._not_before[position], until)
        if self._due[position] != math.inf:
            self._set(position, self._due[position])

    def failed(self, position: int, now: float) -> float:
        """After a pass that raised: retry later, later each time; returns the delay."""
        self._failures[position] += 1
        delay = min(self.poll_interval * 2.0 ** self._failures[position], self.failure_backoff_max)
        self._not_before[position] = now + delay
        self._set(position, now + delay)
        return delay
