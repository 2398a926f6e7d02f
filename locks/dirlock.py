"""The per-directory lock shared by writers and the janitor.

A writer holds it for its whole create -> write -> fsync -> rename -> directory
fsync; the janitor holds it while it sweeps, so it can never remove a temp file that
a write still needs (Litestream #670: a cleanup deleted ``...ltx.tmp`` between close
and rename, and the rename failed with ENOENT).

The protocol, chosen by measurement
-----------------------------------
Writers must share the directory with one another (their fsyncs overlap) and exclude
the janitor; the janitor must exclude every writer, wait with a timeout, and not
starve. filelock offers shared mode only through ``ReadWriteLock`` (SQLite,
430-670 us per acquire) or ``SoftReadWriteLock`` (~13 ms); its exclusive
``lock_descriptor`` on a descriptor the process keeps open costs ~5 us. Measured
on this machine kind (LOCK-MEASUREMENTS.md; 10 writer processes x 200 atomic 1 KiB
writes into one directory): one exclusive lock serialises the fsyncs (~0.28 of the
unlocked rate), 16 exclusive slot locks keep them overlapping (~0.93). So:

* ``.ltxpool.lock`` (the *gate*) and ``.ltxpool.slot-00`` .. ``-15`` (the *slots*),
  all taken with ``lock_descriptor(blocking=False)`` under one wait loop of ours.
* writer: take the gate, take any free slot, drop the gate, write, drop the slot.
  The gate is held for a few microseconds; the slot for the whole write.
* janitor: first, for up to ``patience`` (5 ms), take the gate and all 16 slots
  only at a moment when every one is free (so a writer never waits while the janitor
  waits); if writers keep coming, hold the gate (no new writer can enter) and wait for
  the writes in flight. Its wait is bounded by the longest write in flight, so it
  never starves; if that exceeds its timeout it drops what it holds and raises
  :class:`LockTimeout` (skip the directory until the next round). It never blocks
  forever. (The janitor also lists a directory *before* locking and locks only when
  there is a temp file to remove, see ``ltxpool.replica.janitor``.)
* flock is released by the kernel when a process dies, so a SIGKILLed holder never
  leaves the directory locked.

Our wait loop polls ``lock_descriptor(blocking=False)`` with a backoff from 50 us to
0.5 ms rather than filelock's fixed 50 ms ``poll_interval``: with ~5 us per attempt
the polling is cheap, and every wait stays near the length of one write.

Measured by ``tests/bench/bench_locks.py`` on this machine kind (2 cores, ext4; the
disk is noisy, so ranges over several runs): acquire + release of ``writing()``
7-8 us. One writer per directory, janitor every 10 ms, bare vs locked atomic write
alternating op by op, median ratio: 1 KiB 1.027-1.031 (target <= 1.05), 10 KiB
1.025-1.039, 100 KiB 1.022-1.032, 1 MiB 1.012-1.079 (1,200-op runs: median
1.017-1.044, mean 1.009-1.019; target <= 1.02, met only in some runs); janitor wait
p99 1.4-12 ms. Seed stress (10 writer processes x 200 x 1 KiB, one directory,
janitor every 10 ms): locked 0 failures vs 46-108 of 2000 unlocked, locked/unlocked
throughput 0.86-1.04, writers' wait p99 4-7 ms, janitor wait p99 9-15 ms, ~40-48
sweeps/s. A first version whose janitor held the gate while it waited cost 1.054 at
1 KiB and 1.089 at 1 MiB: writers stalled behind the janitor's polling.

Every wait has a deadline (issue 13): a writer waits at most ``timeout`` seconds
(given to the constructor, ``DEFAULT_TIMEOUT`` unless said), the janitor at most its
cleaning timeout. A lock file is 0600 (see ``ltxpool.locks.lockfile``), so only the
pool's own user can hold it; should one of its processes (or root) hold it anyway,
the :class:`LockTimeout` names the holders, read from ``/proc/locks``
(``ltxpool.locks.holders``), and the caller skips this directory for a while rather
than stall everything behind it.

Lock objects are created in the process (and thread) that uses them, after fork: a
descriptor inherited across fork shares its flock with the parent, so using it in the
child would let parent and child "both" hold the lock.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ltxpool.locks.claim import CLAIM_NAME
from ltxpool.locks.errors import LockFileError, LockTimeout
from ltxpool.locks.holders import Holder, holders_by_inode, holders_of
from ltxpool.locks.lockfile import LockFile

__all__ = ["DirLock", "GATE_NAME", "SLOT_PREFIX", "DEFAULT_SLOTS", "DEFAULT_PATIENCE", "DEFAULT_TIMEOUT",
           "wait_for", "lock_file_names", "holders_in"]

GATE_NAME = ".ltxpool.lock"
SLOT_PREFIX = ".ltxpool.slot-"
DEFAULT_SLOTS = 16

_FIRST_BACKOFF = 0.00005
_MAX_BACKOFF = 0.0005
#: How long the janitor waits for a moment with no write in flight before it holds the gate.
DEFAULT_PATIENCE = 0.005
#: How long a writer waits for the directory unless told otherwise: far longer than
#: any write (or sweep) of ours lasts, far shorter than "forever".
DEFAULT_TIMEOUT = 30.0


def lock_file_names(slots: int = DEFAULT_SLOTS) -> list[str]:
    """The names of a directory's lock files: the gate, then the slots."""
    return [GATE_NAME, *(f"{SLOT_PREFIX}{i:02d}" for i in range(slots))]


def holders_in(directory: str | os.PathLike[str]) -> dict[str, list[Holder]]:
    """Who holds each lock file of ``directory`` now, the held ones only: for ``status`` and metrics.

    Takes no lock and opens no lock file, so asking never stalls or disturbs a writer.
    """
    held: dict[str, list[Holder]] = {}
    for name in (*lock_file_names(), CLAIM_NAME):
        holders = holders_of(os.path.join(directory, name))
        if holders:
            held[name] = holders
    return held


def wait_for(attempt: Callable[[], bool], deadline: float) -> bool:
    """Call ``attempt`` until it returns True or ``time.monotonic()`` passes ``deadline``.

    There is no "wait forever": every wait in ltxpool has a deadline. The backoff
    starts at 50 us and doubles to 0.5 ms: a free lock is taken at once, a busy one
    is polled cheaply.
    """
    backoff = _FIRST_BACKOFF
    while not attempt():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(backoff, remaining))
        backoff = min(backoff * 2, _MAX_BACKOFF)
    return True


class DirLock:
    """The lock of one directory: ``with lock.writing(): ...`` / ``with lock.cleaning(timeout): ...``.

    ``last_wait`` holds the seconds the latest acquisition waited (for metrics).
    ``timeout`` is how long ``writing()`` waits unless it is given another; 0 tries once.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, slots: int = DEFAULT_SLOTS, dir_fd: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``dir_fd``: the open directory to lock (``directory`` then names it in messages).

        A replica's writers pass the descriptor they write through, so the directory
        locked is the one written, whatever its path leads to after a wait.
        """
        self.directory = os.fspath(directory)
        self.timeout = timeout
        self._owner = (os.getpid(), threading.get_ident())
        try:
            self._dir_fd = (os.dup(dir_fd) if dir_fd is not None else
                            os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError as exc:
            raise LockFileError.from_oserror(self.directory, "open directory", exc) from exc
        gate, *slot_names = lock_file_names(slots)
        self._gate = LockFile(self._dir_fd, self.directory, gate)
        self._slots = [LockFile(self._dir_fd, self.directory, name) for name in slot_names]
        self._first_slot = random.randrange(slots)
        self.last_wait = 0.0

    def _check_owner(self) -> None:
        if self._owner != (os.getpid(), threading.get_ident()):
            raise LockFileError(
                self.directory,
                "use lock",
                None,
                f"lock object made in pid/thread {self._owner} used in {(os.getpid(), threading.get_ident())}; "
                "construct lock objects in the process and thread that use them (after fork)",
            )

    def _take_free_slot(self) -> LockFile | None:
        count = len(self._slots)
        for i in range(count):
            slot = self._slots[(self._first_slot + i) % count]
            if slot.try_lock():
                return slot
        return None

    def holders(self) -> list[Holder]:
        """Every other process holding one of this directory's lock files right now."""
        files = [key for lock_file in (self._gate, *self._slots) if (key := lock_file.identity()) is not None]
        found = holders_by_inode(files)
        me = os.getpid()
        seen: dict[int, Holder] = {}
        for key in files:
            for holder in found[key]:
                if holder.pid != me:
                    seen.setdefault(holder.pid, holder)
        return list(seen.values())

    def _timed_out(self, step: str, start: float) -> LockTimeout:
        return LockTimeout(self.directory, step, time.monotonic() - start, self.holders())

    @contextmanager
    def writing(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one slot for a whole write sequence; other writers may hold the others.

        Waits at most ``timeout`` seconds (None: the lock's own ``timeout``), then
        raises :class:`LockTimeout` naming whoever holds the directory.
        """
        self._check_owner()
        if timeout is None:
            timeout = self.timeout
        start = time.monotonic()
        taken: list[LockFile] = []

        def attempt() -> bool:
            if not self._gate.try_lock():
                return False
            try:
                slot = self._take_free_slot()
            finally:
                self._gate.unlock()
            if slot is None:
                return False
            taken.append(slot)
            return True

        if not wait_for(attempt, start + timeout):
            raise self._timed_out("writing", start)
        self.last_wait = time.monotonic() - start
        try:
            yield
        finally:
            taken[0].unlock()

    def _take_everything_at_once(self) -> bool:
        """Take the gate and every slot if all are free right now; otherwise take nothing."""
        if not self._gate.try_lock():
            return False
        for taken, slot in enumerate(self._slots):
            if not slot.try_lock():
                self._release(self._slots[:taken])
                return False
        return True

    def _take_everything_fairly(self, deadline: float) -> bool:
        """Keep the gate (no new writer enters) and wait for the writes in flight."""
        if not wait_for(self._gate.try_lock, deadline):
            return False
        for taken, slot in enumerate(self._slots):
            if not wait_for(slot.try_lock, deadline):
                self._release(self._slots[:taken])
                return False
        return True

    def _release(self, slots: list[LockFile]) -> None:
        for slot in slots:
            slot.unlock()
        self._gate.unlock()

    @contextmanager
    def cleaning(self, timeout: float, patience: float = DEFAULT_PATIENCE) -> Iterator[float]:
        """Exclude every writer for a sweep; yields the seconds waited.

        First, for up to ``patience`` seconds, it takes everything only at a moment
        when no write is in flight, so a writer never waits for the janitor's wait.
        If writers keep coming, it then holds the gate and waits for those in flight:
        it cannot starve. Raises :class:`LockTimeout` when the writes in flight outlast
        ``timeout``; the caller skips this directory until its next round.
        """
        self._check_owner()
        start = time.monotonic()
        deadline = start + timeout
        if not (
            wait_for(self._take_everything_at_once, min(deadline, start + patience))
            or self._take_everything_fairly(deadline)
        ):
            raise self._timed_out("cleaning", start)
        self.last_wait = time.monotonic() - start
        try:
            yield self.last_wait
        finally:
            self._release(self._slots)

    def close(self) -> None:
        """Close every descriptor (dropping any lock still held through them)."""
        for lock_file in (self._gate, *self._slots):
            lock_file.close()
        os.close(self._dir_fd)

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
