"""One child process of the pool, both ends of it, and no policy (that is ``ltxpool.pool.watcher``).

Parent end, :class:`ChildProcess`: forks the child (fork start method, explicitly)
with a fresh one-way pipe, keeps the read end and the process sentinel for the
supervisor's ``wait()``, and turns the child's exit status into words.

Child end, :func:`child_main` and :class:`ChildLink`: names the process for the
logs, ignores SIGINT and SIGHUP (a terminal's Ctrl-C reaches the whole process
group; the supervisor decides what it means and tells each child with SIGTERM),
turns SIGTERM into a stop flag plus a byte on a wake-up pipe (so a sleeping child
wakes at once and a busy one finishes the item in hand), and runs the role's
function. Whatever the role function raises unexpectedly is logged with its
traceback and sent to the parent as one line before the child exits 1. A child
outlives no supervisor: it stops when a send fails (EPIPE) or when its parent pid
is no longer the supervisor's, checked at least every second while it sleeps.

Why one pipe per child rather than one shared queue: a SIGKILLed child can only
cut its own pipe short (the parent reads EOF and drops it), whereas a shared
``multiprocessing.Queue`` has a writers' lock that a killed child could leave held.

Events, child -> parent, are the frozen dataclasses of ``ltxpool.pool.events``
(``Heartbeat``, ``Idle``, ``Busy``, ``StillBusy``, ``Compacted``, ``CompactionFailed``,
``JanitorReported``, ``JanitorRound``, ``JanitorFailed``, ``Crashed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext
from types import FrameType
from typing import Any

from ltxpool.pool.errors import SpawnError
from ltxpool.pool.events import Busy, Crashed, Event, Heartbeat, Idle, StillBusy
from ltxpool.pool.logging import set_role

__all__ = ["ChildLink", "ChildProcess", "child_main", "describe_exit"]

#: The longest a child sleeps without checking that its parent still exists.
_PARENT_CHECK = 1.0

log = logging.getLogger("ltxpool.child")


class ChildLink:
    """The child's end: events to the parent, an interruptible sleep, the stop flag."""

    def __init__(self, conn: Connection, heartbeat_interval: float, parent: int) -> None:
        self._conn = conn
        self._heartbeat_interval = heartbeat_interval
        # The supervisor's pid as the supervisor saw it before forking: asking
        # getppid() here would give 1 if the supervisor died in the meantime.
        self._parent = parent
        self._busy = False
        self._last_sent = time.monotonic()
        self.stopping = False
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    @property
    def parent(self) -> int:
        """The supervisor's pid: its other children are the workers of this pool."""
        return self._parent

    def send(self, event: Event) -> None:
        """Tell the parent something; a parent that is gone means: stop."""
        try:
            self._conn.send(event)
        except OSError:
            self.stopping = True
        self._last_sent = time.monotonic()

    def busy(self, what: str, lag: float = 0.0, replica: str = "") -> None:
        """About to work on one item (of ``replica``): the parent's hang deadline starts now."""
        self._busy = True
        self.send(Busy(what, lag, replica))

    def still_busy(self) -> None:
        """Still on the item in hand, and getting on with it (one more try of a request): the
        parent's hang deadline starts again. Each call sends one event; a caller calls it once
        per network round trip, which costs far more than the pipe write."""
        self.send(StillBusy())

    def sleep(self, seconds: float, wake_on: Sequence[int] = ()) -> None:
        """Sleep up to ``seconds``, waking at once on SIGTERM or when a descriptor in
        ``wake_on`` (the worker's change notification) is readable; keep the parent informed."""
        if self._busy:
            self._busy = False
            self.send(Idle())
        deadline = time.monotonic() + seconds
        while not self.stopping:
            now = time.monotonic()
            if now - self._last_sent >= self._heartbeat_interval:
                self.send(Heartbeat())
            if os.getppid() != self._parent:
                log.warning("supervisor (pid %d) is gone; stopping", self._parent)
                self.stopping = True
                break
            remaining = deadline - now
            if remaining <= 0:
                break
            ready, _, _ = select.select([self._wake_r, *wake_on], [], [],
                                        min(remaining, self._heartbeat_interval, _PARENT_CHECK))
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            if any(fd in ready for fd in wake_on):
                break


#: ``/proc/<pid>/comm`` of a pool child: this prefix and its role (``ltx:worker-0``, ``ltx:janitor``).
COMM_PREFIX = "ltx:"


def name_process(role: str) -> None:
    """Show the role where ``ps``, ``top``, lock-holder lines and ``status`` look: the
    process's command name (15 bytes at most; best effort)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write((COMM_PREFIX + role)[:15])


def child_main(role: str, target: Callable[..., None], conn: Connection, parents_end: Connection,
               parent: int, heartbeat_interval: float, args: tuple[Any, ...]) -> None:
    """The first function of every child: set up signals and logging tag, run the role.

    Fork gave the child the supervisor's read end of its own pipe too; it is closed
    first, so that once the supervisor is gone a send fails (EPIPE) and the child
    stops, instead of filling a pipe only it can read and blocking there forever.
    """
    parents_end.close()
    set_role(role)
    name_process(role)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    link = ChildLink(conn, heartbeat_interval, parent)
    try:
        target(link, *args)
    except Exception as exc:
        log.critical("crashed: %s: %s", type(exc).__name__, exc, exc_info=True)
        link.send(Crashed(f"{type(exc).__name__}: {exc}"))
        sys.exit(1)


def describe_exit(exitcode: int | None) -> str:
    """``exit code 1`` / ``killed by SIGKILL`` for a ``Process.exitcode``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class ChildProcess:
    """One forked child, seen from the supervisor: start, sentinel, events, signals, exit."""

    def __init__(self, ctx: ForkContext, name: str, target: Callable[..., None], args: tuple[Any, ...],
                 heartbeat_interval: float) -> None:
        self.name = name
        self._ctx = ctx
        self._target = target
        self._args = args
        self._heartbeat_interval = heartbeat_interval
        self.conn: Connection | None = None
        self.pid = 0
        self.last_heard = 0.0
        self.doing = "starting"
        #: The replica of the item in hand ("" when idle): a death now is charged to it.
        self.replica = ""
        self.last_error: str | None = None

    def start(self) -> None:
        """Fork the child; raises :class:`SpawnError` if the kernel refuses (nothing is left open)."""
        try:
            reader, writer = self._ctx.Pipe(duplex=False)
        except OSError as exc:
            raise SpawnError.from_oserror(self.name, "pipe", exc) from exc
        # daemon: should the supervisor itself die of an exception, multiprocessing's
        # exit handler sends the children SIGTERM rather than waiting for them forever.
        self.process = self._ctx.Process(
            target=child_main, name=self.name, daemon=True,
            args=(self.name, self._target, writer, reader, os.getpid(), self._heartbeat_interval, self._args),
        )
        try:
            self.process.start()
        except OSError as exc:
            reader.close()
            writer.close()
            raise SpawnError.from_oserror(self.name, "fork", exc) from exc
        # Closed here at once, so that later children do not inherit it and the
        # read end sees EOF as soon as this child is gone.
        writer.close()
        self.conn = reader
        self.pid = self.process.pid or 0
        self.last_heard = time.monotonic()

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def alive(self) -> bool:
        return self.process.exitcode is None

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def receive(self) -> list[Event]:
        """Every event the child has sent so far (none blocks)."""
        events: list[Event] = []
        while self.conn is not None and self.conn.poll():
            try:
                event = self.conn.recv()
            except (EOFError, OSError):
                self.conn.close()
                self.conn = None
                break
            events.append(event)
        if events:
            self.last_heard = time.monotonic()
        for event in events:
            if isinstance(event, Busy):
                self.doing, self.replica = event.what, event.replica
            elif isinstance(event, Idle | Heartbeat):
                self.doing, self.replica = "idle", ""
            elif isinstance(event, Crashed):
                self.last_error = event.line
        return events

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close(self) -> None:
        """Release the pipe and the process handle of a child that has exited."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.process.join(0)
        self.process.close()
