"""Every file ltxpool creates is private unless its source is not, and respects the umask.

Lock files are shared by every process that writes into a directory, and temp files
sit next to the files a restore trusts: a world-writable one would let any local user
break the lock or swap a page; a world-readable one lets any local user read a
database it could not read (#13: nobody restored root's replica of a 0600 database).
So everything is 0o600, except the LTX files replicate makes, which take the source
database's mode without its group/other write bits (as Litestream does), and the
umask can only take bits away. Checked under umask 0o000 as well, where a 0o666
create mode would show as world-writable. Each
kind of file is made by the code path that makes it in production: the atomic writer
(temp and final), compaction, the directory lock and the compaction claim, the
janitor's quarantine, replicate's state, and restore.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ltxpool.replica.atomic import AtomicWriter
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream

PRIVATE_MODE = 0o600
UMASKS = [0o000, 0o002, 0o022, 0o027, 0o077]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def kind_of(path: Path) -> str:
    name = path.name
    if name.endswith(".tmp"):
        return "temp file"
    if name.startswith(".ltxpool.") or name == ".ltxpool.claim":
        return "lock file"
    if name.endswith(".reason"):
        return "quarantine note"
    if path.parent.name == ".ltxpool-replicate":
        return "replicate state"
    if name.endswith(".ltx"):
        return "LTX file"
    return "other"


def made_files(root: Path) -> dict[Path, int]:
    return {
        Path(dirpath, name): stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
        for dirpath, _, names in os.walk(root)
        for name in names
    }


def make_everything(root: Path) -> dict[Path, int]:
    """Run every code path that creates a file; return the temp files' modes, seen mid-write."""
    stream = SyntheticStream(Replica(root / "replica"), seed=3)
    stream.run(4)
    assert compact_level(stream.replica, 1) is not None
    bad = Path(stream.replica.list_level(0).files[-1].path)
    bad.write_bytes(bad.read_bytes()[:-5])
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.quarantined == 1
    restore(stream.replica, root / "restored.db", stream.txid - 1, check_integrity=False)
    database = root / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t(x)")
        connection.execute("INSERT INTO t VALUES (randomblob(5000))")
    connection.close()
    with Replicator(database, root / "replicated") as replicator:
        assert replicator.step() is not None
    with AtomicWriter(root / "replica" / "ltx" / "0" / "in-flight.ltx") as writer:
        writer.write(b"x")
        temp = {Path(writer.temp_path): stat.S_IMODE(os.lstat(writer.temp_path).st_mode)}
    return temp


@pytest.mark.parametrize("mask", UMASKS, ids=lambda mask: f"umask-{mask:03o}")
def test_created_files_respect_the_umask_and_are_never_world_writable(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        temps = make_everything(tmp_path)
    files = {**made_files(tmp_path), **temps}
    kinds = {kind_of(path) for path in files}
    assert {"temp file", "lock file", "quarantine note", "replicate state", "LTX file"} <= kinds
    database_mode = stat.S_IMODE(os.stat(tmp_path / "app.db").st_mode)
    for path, mode in files.items():
        if path.name == "app.db" or path.name.startswith("app.db-"):
            continue  # SQLite's own files, made by the test's connection
        follows_database = kind_of(path) == "LTX file" and (tmp_path / "replicated") in path.parents
        expected = (database_mode & 0o644 | 0o600) if follows_database else PRIVATE_MODE
        assert mode == expected & ~mask, f"{kind_of(path)} {path}: mode {mode:03o} under umask {mask:03o}"
        assert not mode & stat.S_IWOTH, f"{kind_of(path)} {path} is world-writable"
        assert follows_database or not mode & 0o077, f"{kind_of(path)} {path} is readable by others"
    for dirpath, dirnames, _ in os.walk(tmp_path):
        for name in dirnames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            assert not mode & mask, f"directory {dirpath}/{name}: mode {mode:03o} ignores umask {mask:03o}"
    record(f"file modes under umask {mask:03o}", len(files), kinds=sorted(kinds))


def test_the_check_would_see_a_world_writable_create_mode(tmp_path: Path) -> None:
    """Control: under umask 0 a file made the way ``open()`` makes files is world-writable."""
    with umask(0):
        (tmp_path / "plain").write_bytes(b"")
    assert stat.S_IMODE(os.lstat(tmp_path / "plain").st_mode) & stat.S_IWOTH
