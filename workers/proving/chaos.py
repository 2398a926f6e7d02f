"""Crash chaos: the whole pool at work while random processes are SIGKILLed, then an audit.

Invariants 2 and 3 (a final name always holds a complete file; restore of the latest
TXID equals the source) must hold "even if any process is SIGKILLed at any instant".
This runs the real thing and kills it for a bounded time::

    harness (this process; a child subreaper, so a killed supervisor's children come back here)
      ├── app         SQLite writes in WAL mode: the source, never killed
      ├── replicate   ``ltxpool replicate DB REPLICA`` (forked), restarted at once when killed
      └── supervise   ``ltxpool supervise --config`` (forked), restarted at once when killed
            ├── worker-0 .. worker-3   restarted by the supervisor (no backoff, no crash-loop limit)
            └── janitor

Every ``kill_interval`` a victim is drawn -- a worker, the janitor, replicate, and
now and then the supervisor itself -- SIGKILLed, and its death confirmed. At the end
the app stops and every process is SIGKILLed (no graceful stop cleans up after them),
then ``ltxpool.proving.chaos_audit`` checks the replica: nothing partial under a final name,
no orphan temp file after one janitor round, no lock held, no gap, and a restore of
the latest TXID equal to the database.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import random
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from ltxpool.proving.chaos_audit import audit
from ltxpool.replica.atomic import temp_file_writer
from ltxpool.replica.layout import LEVELS, Replica
from ltxpool.replicate.state import STATE_DIR

__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]

_CTX = multiprocessing.get_context("fork")
_PR_SET_CHILD_SUBREAPER = 36
#: How many kills, out of 100, go to each kind of victim (a worker is drawn among the workers).
_WEIGHTS = {"worker": 55, "janitor": 15, "replicate": 25, "supervisor": 5}
_STARTED = re.compile(r"\] (\S+) (?:started|restarted) \(pid (\d+)\)")

_POOL_CONFIG = """\
workers = {workers}
[compaction]
intervals = {{ 1 = 0.05, 2 = 0.2, 3 = 0.5 }}
snapshot_interval = 1.0
poll_interval = 0.02
[retention]
levels = {{ 0 = 0.5, 1 = 1.0, 2 = 1.0, 3 = 1.0 }}
snapshots = 2.0
[janitor]
interval = 0.1
cleaning_timeout = 0.5
[supervisor]
grace = 2
restart_backoff = 0
restart_backoff_max = 0
crash_loop_restarts = 1000000000
crash_loop_window = 1
hang_timeout = 120
"""


@dataclass(frozen=True)
class ChaosConfig:
    directory: str
    seconds: float = 30.0
    workers: int = 4
    kill_interval: tuple[float, float] = (0.02, 0.08)
    seed: int | None = None
    #: Go on past ``seconds`` until this many kills (on a loaded machine each restart is
    #: slower), for at most ``max_seconds``.
    min_kills: int = 0
    max_seconds: float = 0.0


@dataclass
class ChaosReport:
    """What was killed, what the pool did meanwhile, and what the audit found (``problems``)."""

    seconds: float = 0.0
    kills: dict[str, int] = field(default_factory=dict)
    unconfirmed_kills: int = 0
    kills_mid_write: int = 0
    latest_txid: int = 0
    compactions: dict[int, int] = field(default_factory=dict)
    orphans_removed_by_janitor: int = 0
    orphans_at_end: int = 0
    problems: list[str] = field(default_factory=list)
    directory: str = ""

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_kills": self.total_kills, "ok": self.ok}


#: The command line's entry point, ``main(argv) -> exit code``. Passed in by the caller
#: (``ltxpool stress --chaos`` passes its own): the library never imports the CLI.
Command = Callable[[list[str]], int]


def _cli_child(command: Command, argv: list[str], log_path: str) -> None:
    """A forked child running ``ltxpool ARGV`` with stdout and stderr appended to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    sys.exit(command(argv))


def _app(database: str, stop: Any, seed: int) -> None:
    """The application: small transactions that update, grow and shrink the database."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(seed)
    connection = sqlite3.connect(database, isolation_level=None, timeout=60)
    try:
        while not stop.is_set():
            connection.execute("BEGIN IMMEDIATE")
            roll = rng.random()
            if roll < 0.1:
                connection.execute("DELETE FROM docs WHERE id IN (SELECT id FROM docs ORDER BY random() LIMIT 5)")
            elif roll < 0.3:
                connection.executemany("INSERT INTO docs(body) VALUES (randomblob(?))",
                                       [(rng.randrange(50, 3000),) for _ in range(3)])
            else:
                connection.execute("UPDATE docs SET body = randomblob(?) WHERE id = (SELECT id FROM docs "
                                   "ORDER BY random() LIMIT 1)", (rng.randrange(50, 3000),))
            connection.execute("COMMIT")
            time.sleep(rng.uniform(0.001, 0.006))
    finally:
        connection.close()


def _create_database(database: str) -> None:
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=wal")
        connection.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body BLOB)")
        connection.executemany("INSERT INTO docs(body) VALUES (randomblob(?))", [(1500,)] * 400)
    finally:
        connection.close()


def _children(pid: int) -> list[int]:
    """Live children of ``pid`` (every thread's), from /proc."""
    found: list[int] = []
    with suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(word) for word in listing.read().split())
    return found


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, T, Z, ...); "" once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its parent counts as gone)."""
    return _state(pid) in ("Z", "")


@contextmanager
def _subreaper() -> Iterator[None]:
    """Become the parent of orphans for the block, so none is left running unseen."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


class _Harness:
    """The processes of one chaos run and the bookkeeping of who is who."""

    def __init__(self, config: ChaosConfig, command: Command, database: str, replica: str, pool_config: str) -> None:
        self.config = config
        self.command = command
        self.database = database
        self.replica = replica
        self.pool_config = pool_config
        self.pool_log = os.path.join(config.directory, "pool.log")
        self.replicate_log = os.path.join(config.directory, "replicate.log")
        self.stop_app = _CTX.Event()
        self.app = _CTX.Process(target=_app, args=(database, self.stop_app, config.seed or 0), name="app")
        self.replicate: BaseProcess  # set by start()
        self.supervisor: BaseProcess
        self.pool_pids: set[int] = set()
        self.exits: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self.unconfirmed = 0
        self.mid_write = 0

    def start(self) -> None:
        self.app.start()
        self.replicate = self._start_replicate()
        self.supervisor = self._start_supervisor()

    def _start_replicate(self) -> BaseProcess:
        argv = ["replicate", self.database, self.replica, "--interval", "0.02"]
        process = _CTX.Process(target=_cli_child, args=(self.command, argv, self.replicate_log), name="replicate")
        process.start()
        return process

    def _start_supervisor(self) -> BaseProcess:
        argv = ["supervise", "--config", self.pool_config, self.replica]
        process = _CTX.Process(target=_cli_child, args=(self.command, argv, self.pool_log), name="supervise")
        process.start()
        return process

    def pool_roles(self) -> dict[int, str]:
        """pid -> role of the supervisor's children, from its log ("worker-1 started (pid P)")."""
        try:
            with open(self.pool_log, errors="replace") as log:
                return {int(pid): role.split("-")[0] for role, pid in _STARTED.findall(log.read())}
        except FileNotFoundError:
            return {}

    def restart_the_dead(self) -> None:
        """A direct child that died by itself (not by our hand) is a finding; start it again."""
        if not self.replicate.is_alive():
            self.exits[f"replicate exit {self.replicate.exitcode}"] += 1
            self.replicate = self._start_replicate()
        if not self.supervisor.is_alive():
            self.exits[f"supervise exit {self.supervisor.exitcode}"] += 1
            self.supervisor = self._start_supervisor()

    def reap_orphans(self) -> None:
        """Wait for children of killed supervisors that the kernel handed to us."""
        for pid in _children(os.getpid()):
            if pid in self.pool_pids:
                with suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def victims(self) -> dict[str, list[int]]:
        roles = self.pool_roles()
        pool = [pid for pid in _children(_pid(self.supervisor)) if not _gone(pid)]
        self.pool_pids.update(pool)
        return {
            "worker": [pid for pid in pool if roles.get(pid) == "worker"],
            "janitor": [pid for pid in pool if roles.get(pid) == "janitor"],
            "replicate": [_pid(self.replicate)],
            "supervisor": [_pid(self.supervisor)],
        }

    def kill_one(self, rng: random.Random) -> None:
        victims = self.victims()
        kind = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0]
        if not victims[kind]:
            return
        self._kill(kind, rng.choice(victims[kind]))

    def kill_mid_write(self, timeout: float) -> None:
        """Aim kills at writes in flight until one lands mid-write (or ``timeout`` passes).

        Random kills land mid-write only by luck (about 1 run in 6 had none). A temp
        file names its writer's pid, so: watch the directories, and SIGKILL the writer
        of a temp file that is there now. The write may still finish first; then aim again.
        """
        deadline = time.monotonic() + timeout
        while self.mid_write == 0 and time.monotonic() < deadline:
            self.restart_the_dead()
            kinds = {pid: kind for kind, pids in self.victims().items() if kind != "supervisor" for pid in pids}
            writers = [pid for pid in self._temp_file_writers() if pid in kinds]
            if writers:
                self._kill(kinds[writers[0]], writers[0])
            else:
                time.sleep(0.0005)

    def _kill(self, kind: str, pid: int) -> None:
        if kind == "supervisor":
            self._freeze_and_note_children(pid)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if kind in ("replicate", "supervisor"):
            process = self.replicate if kind == "replicate" else self.supervisor
            confirmed = _reaped(process) == -signal.SIGKILL
            if kind == "replicate":
                self.replicate = self._start_replicate()
            else:
                self.supervisor = self._start_supervisor()
        else:
            confirmed = _wait_until(lambda: _gone(pid), 10.0)
        if confirmed:
            self.kills[kind] += 1
            self.mid_write += self._left_a_temp_file(pid)
        else:
            self.unconfirmed += 1

    def _watched_directories(self) -> list[str]:
        replica = Replica(self.replica)
        return [replica.level_dir(level) for level in LEVELS] + [os.path.join(self.replica, STATE_DIR)]

    def _temp_file_writers(self) -> list[int]:
        """Pids named by the ltxpool temp files in the replica right now."""
        pids = []
        for directory in self._watched_directories():
            with suppress(FileNotFoundError):
                pids += [pid for pid in map(temp_file_writer, os.listdir(directory)) if pid is not None]
        return pids

    def _left_a_temp_file(self, pid: int) -> bool:
        """Whether the dead process left a temp file (its pid is in the name): killed mid-write."""
        return pid in self._temp_file_writers()

    def _freeze_and_note_children(self, pid: int) -> None:
        """Stop the supervisor first, so it cannot fork a child we would not know to reap."""
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        _wait_until(lambda: _state(pid) in ("T", "Z", ""), 5.0)
        self.pool_pids.update(_children(pid))

    def kill_everything(self) -> None:
        """The end: SIGKILL every process of the run, as a power cut would, and reap them all."""
        self.stop_app.set()
        self.app.join(30)
        self._freeze_and_note_children(_pid(self.supervisor))
        for process in (self.replicate, self.supervisor):
            with suppress(ProcessLookupError):
                os.kill(_pid(process), signal.SIGKILL)
            _reaped(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [pid for pid in _children(os.getpid()) if pid in self.pool_pids]
            if not left:
                return
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with suppress(ChildProcessError):
                    os.waitpid(pid, 0)


def _pid(process: BaseProcess) -> int:
    """The pid of a started process (``pid`` is None only before ``start()``)."""
    assert process.pid is not None, f"{process.name} was never started"
    return process.pid


def _reaped(process: BaseProcess) -> int | None:
    """Wait for a direct child to die and be reaped; its exit code (None if it did not die).

    Not ``join()``: that waits for the process sentinel, a pipe the supervisor's own
    children inherited, so it stays open until they have all exited too.
    """
    _wait_until(lambda: process.exitcode is not None, 10.0)
    return process.exitcode


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _log_findings(harness: _Harness, report: ChaosReport) -> None:
    """Counts from the logs, and every line that shows a bug rather than a kill."""
    with open(harness.pool_log, errors="replace") as log:
        pool = log.read()
    for level in re.findall(r"compacted \d+ files into level (\d+)", pool):
        report.compactions[int(level)] = report.compactions.get(int(level), 0) + 1
    report.orphans_removed_by_janitor = sum(int(n) for n in re.findall(r"janitor removed (\d+) orphaned", pool))
    with open(harness.replicate_log, errors="replace") as log:
        replicate = log.read()
    for name, text in (("pool", pool), ("replicate", replicate)):
        for line in text.splitlines():
            if any(sign in line for sign in ("crashed", "Traceback", "giving up", "ltxpool: error")):
                report.problems.append(f"{name} log: {line.strip()}")
    for what, count in harness.exits.items():
        report.problems.append(f"{what} (not killed by us): {count} times")


def run_chaos(config: ChaosConfig, command: Command, progress: Callable[[str], None] | None = None) -> ChaosReport:
    """Run the pool under random SIGKILLs for ``config.seconds`` (longer while under
    ``config.min_kills``, up to ``config.max_seconds``), kill it all, audit the replica.

    ``command`` is the command line's ``main``: replicate and supervise run as forked
    children calling it, so a restart after a kill costs a fork, not an interpreter start.
    """
    os.makedirs(config.directory, exist_ok=True)
    database = os.path.join(config.directory, "app.db")
    replica = os.path.join(config.directory, "replica")
    pool_config = os.path.join(config.directory, "pool.toml")
    with open(pool_config, "w") as out:
        out.write(_POOL_CONFIG.format(workers=config.workers))
    _create_database(database)
    os.makedirs(replica, exist_ok=True)
    rng = random.Random(config.seed)
    report = ChaosReport(directory=config.directory)
    started = time.monotonic()
    with _subreaper():
        harness = _Harness(config, command, database, replica, pool_config)
        harness.start()
        try:
            deadline = started + config.seconds
            longest = started + max(config.seconds, config.max_seconds)
            next_progress = started + 5
            while time.monotonic() < deadline or (sum(harness.kills.values()) < config.min_kills
                                                  and time.monotonic() < longest):
                time.sleep(rng.uniform(*config.kill_interval))
                harness.reap_orphans()
                harness.restart_the_dead()
                harness.kill_one(rng)
                if progress is not None and time.monotonic() >= next_progress:
                    progress(f"{time.monotonic() - started:.0f} s: {sum(harness.kills.values())} kills")
                    next_progress += 5
            harness.kill_mid_write(timeout=config.seconds)
        finally:
            harness.kill_everything()
    report.seconds = time.monotonic() - started
    report.kills = dict(harness.kills)
    report.unconfirmed_kills = harness.unconfirmed
    report.kills_mid_write = harness.mid_write
    _log_findings(harness, report)
    outcome = audit(Replica(replica), database, os.path.join(config.directory, "restored.db"))
    report.problems.extend(outcome.problems)
    report.latest_txid = outcome.latest_txid
    report.orphans_at_end = outcome.orphans_at_end
    return report
