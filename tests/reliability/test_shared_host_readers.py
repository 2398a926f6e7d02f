"""No local user reads through ltxpool what the source database did not let it read.

``nobody`` (a real process, reading with ``cat`` as any local user could) tries every
file of a replica of a 0600 database, through every path ltxpool makes files: replicate
(level 0 and its state), compaction (level 1 and a level-9 snapshot), the janitor's
quarantine and its note, and restore's output. The control switches the protection off
(replica files made world-readable, as before #13: 0644 files in 0755 folders) and the
same reads succeed and give the database's bytes away.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from ltxpool.replica import access
from ltxpool.replica.access import FileAccess
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import SNAPSHOT_LEVEL, Replica
from ltxpool.replica.restore import restore
from ltxpool.replicate.replicator import Replicator
from tests.support.users import User, run_as

SECRET = "s3cr3t-payroll-row"


def readable_by(user: User, root: Path) -> list[str]:
    """Every file under ``root`` that ``user`` can read (with ``cat``)."""
    files = [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    script = 'for f in "$@"; do cat "$f" >/dev/null 2>&1 && echo "$f"; done; exit 0'
    result = run_as(user, ["sh", "-c", script, "reader", *files])
    return result.stdout.split()


@pytest.mark.parametrize("protected", [pytest.param(True, id="protected"), pytest.param(False, id="control-0644")])
def test_nobody_reads_nothing_of_a_private_databases_replica(
    shared_tmp: str, nobody: User, protected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(shared_tmp)
    database = base / "private.db"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE pay(x)")
        connection.execute("INSERT INTO pay VALUES (?)", (SECRET,))
    os.chmod(database, 0o600)
    if not protected:
        monkeypatch.setattr(access.FileAccess, "of_database", classmethod(lambda cls, path: FileAccess(0o644)))
        monkeypatch.setattr(access.FileAccess, "dir_mode", property(lambda self: 0o755))
    root = base / "replica"
    with Replicator(database, root) as replicator:
        assert replicator.step() is not None
        for n in range(3):
            with contextlib.closing(sqlite3.connect(database)) as connection, connection:
                connection.execute("INSERT INTO pay VALUES (?)", (f"{SECRET}-{n}",))
            assert replicator.step() is not None
    replica = Replica(root)
    assert compact_level(replica, 1) is not None
    assert compact_level(replica, SNAPSHOT_LEVEL) is not None
    newest = Path(replica.list_level(0).files[-1].path)
    newest.write_bytes(newest.read_bytes()[:-3])
    assert janitor_pass(replica, JanitorSettings(), time.time()).quarantined == 1
    restored = base / "restored.db"
    restore(replica, restored, mode=0o600 if protected else 0o644)
    leaked = readable_by(nobody, base)
    if protected:
        assert leaked == [], f"readable by nobody: {leaked}"
        assert sorted(os.listdir(root / "ltx")) == ["0", "1", "9"]
    else:
        ltx_files = [f for f in leaked if f.endswith(".ltx")]
        assert ltx_files and str(restored) in leaked, "control: world-readable replica files give the data away"
