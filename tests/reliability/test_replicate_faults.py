"""Injected faults at every system call of replicate, and EMFILE on lock files.

``tests/reliability/test_faults.py`` covers compaction, restore and the janitor; this adds what
they leave out: each syscall a replicate step or a replicate start makes (listing the
replica and the state directory, reading the database, the level-0 atomic write, the
checksum array, state.json, the lock files), with EIO, ENOSPC, EDQUOT, EACCES, EROFS
and EMFILE, and EMFILE on the compactor's lock files. Each must be a typed error
naming the file and the step on one line; once the fault is gone, replication goes
on -- in the same process, or in a new one -- with no TXID lost or repeated, and
every TXID restores to the database it captured.

The injector resolves descriptors and ``dir_fd``-relative names to paths through
/proc/self/fd, so a fault hits exactly one file, and counts how often it fired.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ltxpool.errors import LtxpoolError
from ltxpool.locks.errors import LockFileError
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.errors import LevelDirectoryError
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import TXID_RECORD, restore
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream

ERRNOS = [errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EMFILE]
from tests.support.helpers import path_of


def inject(monkeypatch: pytest.MonkeyPatch, name: str, code: int, applies: Callable[[str], bool]) -> Counter[str]:
    """Make ``os.<name>`` fail with ``code`` for the paths ``applies`` accepts; count the hits."""
    real = getattr(os, name)
    hits: Counter[str] = Counter()

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if applies(path_of(args, kwargs)):
            hits[name] += 1
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, faulty)
    return hits


def in_level0(suffix: str) -> Callable[[str], bool]:
    return lambda path: os.path.basename(os.path.dirname(path)) == "0" and path.endswith(suffix)


def in_state(suffix: str) -> Callable[[str], bool]:
    return lambda path: os.path.basename(os.path.dirname(path)) == ".ltxpool-replicate" and path.endswith(suffix)


def is_level0_dir(path: str) -> bool:
    return path.endswith(os.path.join("ltx", "0"))


def named(name: str) -> Callable[[str], bool]:
    return lambda path: os.path.basename(path) == name


#: step -> (os function, which calls fail, the step the error must name)
STEP_FAULTS: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "read WAL": ("pread", named("app.db-wal"), "read"),
    "read wal-index": ("pread", named("app.db-shm"), "read wal-index"),
    "level-0 create": ("open", in_level0(".tmp"), "create"),
    "level-0 write": ("write", in_level0(".tmp"), "write"),
    "level-0 fsync": ("fsync", in_level0(".tmp"), "fsync"),
    "level-0 rename": ("rename", in_level0(".tmp"), "rename"),
    "level-0 fsync-dir": ("fsync", is_level0_dir, "fsync-dir"),
    "level-0 lock file": ("open", lambda path: os.path.basename(path) == ".ltxpool.lock", "open lock file"),
    "txids append": ("pwrite", in_state("txids"), "append txid record"),
    "txids fsync": ("fsync", in_state("txids"), "append txid record"),
    "checksums write": ("pwrite", in_state("checksums"), "write checksums"),
    "checksums fsync": ("fsync", in_state("checksums"), "write checksums"),
    "state.json create": ("open", in_state(".tmp"), "create"),
    "state.json rename": ("rename", in_state(".tmp"), "rename"),
}
#: faults that stop a replicate process from starting
START_FAULTS: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "list state directory": ("listdir", lambda path: path.endswith(".ltxpool-replicate"), "list state directory"),
    "list level directory": ("scandir", is_level0_dir, "list level directory"),
    "open claim": ("open", lambda path: path.endswith(os.path.join(".ltxpool-replicate", ".ltxpool.claim")),
                   "open lock file"),
}


class Source:
    """The database and the images replication must restore to, per TXID."""

    def __init__(self, directory: Path, mode: str = "wal") -> None:
        self.path = directory / "app.db"
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute(f"PRAGMA journal_mode={mode}")
        self.conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
        self.counter = 0
        self.images: dict[int, bytes] = {}

    def change(self) -> None:
        self.counter += 1
        self.conn.execute("INSERT INTO t(body) VALUES (randomblob(?))", (700 + self.counter * 37 % 900,))

    def step(self, replicator: Replicator) -> None:
        image = self.conn.serialize()
        result = replicator.step()
        assert result is not None
        self.images[result.txid] = image


def newest_txid(root: Path) -> int:
    return max((f.max_txid for listing in Replica(root).list_all().values() for f in listing.files), default=0)


def assert_one_line_naming(error: LtxpoolError, step: str, code: int) -> None:
    assert (error.step, error.errno) == (step, code), error
    assert error.path and error.path in str(error) and "\n" not in str(error)


def assert_every_txid_restores(root: Path, source: Source, scratch: Path) -> None:
    assert sorted(source.images) == list(range(1, newest_txid(root) + 1))
    for txid, image in source.images.items():
        out = scratch / f"restored-{txid}.db"
        result = restore(Replica(root), out, txid)
        assert out.read_bytes() == image, f"TXID {txid}"
        assert result.verified_by == (TXID_RECORD,), f"TXID {txid} has no record"


@pytest.mark.parametrize("reopen", [False, True], ids=["same process", "new process"])
@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("fault", list(STEP_FAULTS))
def test_a_failed_replicate_step_is_named_and_replication_goes_on_without_losing_a_txid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, code: int, reopen: bool
) -> None:
    source = Source(tmp_path)
    root = tmp_path / "replica"
    replicator = Replicator(source.path, root)
    try:
        for _ in range(2):
            source.change()
            source.step(replicator)
        source.change()
        image = source.conn.serialize()
        function, applies, step = STEP_FAULTS[fault]
        hits = inject(monkeypatch, function, code, applies)
        with pytest.raises(LtxpoolError) as caught:
            replicator.step()
        monkeypatch.undo()
        assert hits[function] > 0
        record(f"replicate step: {fault}", hits[function], errno=errno.errorcode[code])
        assert_one_line_naming(caught.value, step, code)
        assert not list(root.rglob("*.tmp")), "a temp file was left behind"
        if newest_txid(root) > max(source.images):
            # The LTX file was durable before the state failed: that TXID is in the replica.
            source.images[newest_txid(root)] = image
        if reopen:
            replicator.close()
            replicator = Replicator(source.path, root)
        source.change()
        source.step(replicator)
    finally:
        replicator.close()
    assert_every_txid_restores(root, source, tmp_path)


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_a_failed_database_read_in_rollback_journal_mode_is_named_and_the_next_step_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    source = Source(tmp_path, mode="delete")
    root = tmp_path / "replica"
    with Replicator(source.path, root) as replicator:
        source.change()
        source.step(replicator)
        source.change()
        hits = inject(monkeypatch, "pread", code, named("app.db"))
        with pytest.raises(LtxpoolError) as caught:
            replicator.step()
        monkeypatch.undo()
        assert hits["pread"] > 0
        record("replicate step: read database (rollback journal)", hits["pread"], errno=errno.errorcode[code])
        assert_one_line_naming(caught.value, "read database", code)
        source.step(replicator)
    assert_every_txid_restores(root, source, tmp_path)


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("fault", list(START_FAULTS))
def test_a_replicate_start_that_fails_is_named_and_the_next_start_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, code: int
) -> None:
    source = Source(tmp_path)
    root = tmp_path / "replica"
    with Replicator(source.path, root) as replicator:
        source.change()
        source.step(replicator)
    function, applies, step = START_FAULTS[fault]
    hits = inject(monkeypatch, function, code, applies)
    with pytest.raises(LtxpoolError) as caught:
        Replicator(source.path, root).close()
    monkeypatch.undo()
    assert hits[function] > 0
    record(f"replicate start: {fault}", hits[function], errno=errno.errorcode[code])
    assert_one_line_naming(caught.value, step, code)
    with Replicator(source.path, root) as replicator:
        source.change()
        source.step(replicator)
    assert_every_txid_restores(root, source, tmp_path)


#: lock -> (which opens fail, the step named, the error). The level directory is opened
#: once and its descriptor shared by the claim, the lock and the writer.
LOCK_FAULTS: dict[str, tuple[Callable[[str], bool], str, type[LtxpoolError]]] = {
    "claim directory": (lambda path: path.endswith(os.path.join("ltx", "1")), "open directory", LevelDirectoryError),
    "claim file": (lambda path: os.path.basename(path) == ".ltxpool.claim", "open lock file", LockFileError),
    "gate file": (lambda path: path.endswith(os.path.join("1", ".ltxpool.lock")), "open lock file", LockFileError),
    "slot file": (lambda path: os.path.basename(path).startswith(".ltxpool.slot-"), "open lock file",
                  LockFileError),
}


@pytest.mark.parametrize("lock", list(LOCK_FAULTS))
def test_emfile_on_the_compactors_lock_files_is_named_and_the_retry_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str
) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=4)
    stream.run(4)
    stream.replica.ensure_level_dir(1)
    applies, step, error = LOCK_FAULTS[lock]
    hits = inject(monkeypatch, "open", errno.EMFILE, applies)
    with pytest.raises(error) as caught:
        compact_level(stream.replica, 1)
    monkeypatch.undo()
    assert hits["open"] > 0
    record(f"compaction lock file EMFILE: {lock}", hits["open"])
    assert_one_line_naming(caught.value, step, errno.EMFILE)
    assert stream.replica.list_level(1).files == [] and not list(Path(stream.replica.root).rglob("*.tmp"))
    assert compact_level(stream.replica, 1) is not None
    restore(stream.replica, tmp_path / "out.db", check_integrity=False)
    assert (tmp_path / "out.db").read_bytes() == stream.images[stream.txid]

