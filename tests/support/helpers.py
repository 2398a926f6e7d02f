"""Test helpers: real child processes (fork start method, set explicitly) and the CLI."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from ltxpool.locks.claim import Claim

FORK = multiprocessing.get_context("fork")


def run_ltxpool(*args: str, timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line in a real child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "ltxpool.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


class Child:
    """A forked child running ``target(*args, ready, release)``; ``ready``/``release`` are events."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.ready = FORK.Event()
        self.release = FORK.Event()
        self.process = FORK.Process(target=target, args=(*args, self.ready, self.release), daemon=True)
        self.process.start()

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.ready.wait(timeout), "child did not get ready in time"

    def finish(self, timeout: float = 10.0) -> int | None:
        self.release.set()
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)


def fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def is_temp_fd(fd: int) -> bool:
    return fd_target(fd).endswith(".tmp")


def is_dir_fd(fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    except OSError:
        return False


def inject(monkeypatch: pytest.MonkeyPatch, name: str, code: int, applies, *, after_real_call: bool = False) -> None:
    """Make ``os.<name>`` fail with ``code`` where ``applies(first_arg)``; elsewhere it works."""
    real = getattr(os, name)

    def faulty(*args, **kwargs):
        if applies(args[0]):
            if after_real_call:
                real(*args, **kwargs)
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, faulty)


def hold_claim(directory: str, ready: Any, release: Any) -> None:
    """Child body: hold the compaction claim of ``directory`` until released."""
    with Claim(directory) as claim, claim.held() as mine:
        assert mine
        ready.set()
        release.wait(30)


def path_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The file an os call is about: a descriptor, a path, or a name relative to ``dir_fd``."""
    first = args[0]
    if isinstance(first, int):
        return fd_target(first)
    path = os.fsdecode(first)
    dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
    if dir_fd is not None and not os.path.isabs(path):
        return os.path.join(fd_target(dir_fd), path)
    return path


class RoundsLink:
    """A stand-in for the supervisor link that lets ``janitor_main`` run ``rounds`` rounds in-process.

    ``events`` holds what it sent; ``locks_per_round`` how many ``DirLock`` objects each round
    built (when ``count_locks`` was applied), read at each ``JanitorRound``.
    """

    def __init__(self, rounds: int, between: Callable[[int], None] | None = None,
                 locks: list[int] | None = None) -> None:
        self.rounds = rounds
        self.between = between
        self.events: list[Any] = []
        self.round_events: list[Any] = []
        self.locks_per_round: list[int] = []
        self.lock_count = [0] if locks is None else locks
        self._counted = self.lock_count[0]

    @property
    def stopping(self) -> bool:
        return len(self.round_events) >= self.rounds

    @property
    def parent(self) -> int:
        return os.getppid()

    def send(self, event: Any) -> None:
        from ltxpool.pool.events import JanitorRound

        self.events.append(event)
        if isinstance(event, JanitorRound):
            self.round_events.append(event)
            self.locks_per_round.append(self.lock_count[0] - self._counted)
            self._counted = self.lock_count[0]

    def busy(self, what: str, lag: float = 0.0, replica: str = "") -> None:
        pass

    def sleep(self, seconds: float) -> None:
        if self.between is not None and not self.stopping:
            self.between(len(self.round_events))

    def reports(self, round_index: int) -> list[Any]:
        """The ``JanitorReported`` reports of one round (0-based)."""
        from ltxpool.pool.events import JanitorReported, JanitorRound

        found, seen = [], 0
        for event in self.events:
            if isinstance(event, JanitorRound):
                seen += 1
            elif isinstance(event, JanitorReported) and seen == round_index:
                found.append(event.report)
        return found


def count_locks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every ``DirLock`` built (each opens its directory and 17 lock files); pass it to RoundsLink."""
    from ltxpool.locks.dirlock import DirLock

    real = DirLock.__init__
    count = [0]

    def counting(self: DirLock, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(DirLock, "__init__", counting)
    return count
def make_sqlite_database(path: str | os.PathLike[str], *, wal: bool = False) -> str:
    """A real SQLite database with one table and one row (in this process: no child)."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        if wal:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (1)")
        connection.commit()
    finally:
        connection.close()
    return os.fspath(path)
