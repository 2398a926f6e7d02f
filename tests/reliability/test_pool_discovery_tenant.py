"""A tenant who owns its folder under a ``dir`` entry swaps a sub-folder for a link to root's files.

The pool (root) found ``alice/app/shop.db`` and is about to take its first step.
The tenant (a real user, real ``mv`` and ``ln``) moves ``app`` away and puts a link
to a root-only folder in its place, which holds a ``shop.db`` of root's. The step
must not read root's database into a replica.

Control, same run: the step without its link check (what it did before) reads root's
database: the replica restores root's secret rows.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ltxpool.discovery import DatabaseDir
from ltxpool.pool import share as share_module
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.share import DatabaseShare
from tests.support.many_databases import create_database, restored_ids
from tests.support.users import User, run_as


def secret_rows(path: Path) -> set[int]:
    with sqlite3.connect(path) as conn:
        return {row for (row,) in conn.execute("SELECT id FROM t")}


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control-no-link-check"])
def test_a_folder_swapped_for_a_link_after_discovery_is_never_read_through(
    shared_tmp: str, tenant: User, protected: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = Path(shared_tmp)
    tenants, replicas, private = base / "tenants", base / "ltx", base / "root-only"
    for folder in (tenants, replicas):
        folder.mkdir(mode=0o755)
    private.mkdir(mode=0o700)
    secret = create_database(private / "shop.db", rows=40)
    alice = tenants / "alice"
    alice.mkdir()
    create_database(alice / "app" / "shop.db", rows=2)
    for entry in [alice, *alice.rglob("*")]:
        os.chown(entry, tenant.uid, tenant.gid)
    config = PoolConfig(databases=(DatabaseDir(str(tenants), str(replicas), recursive=True),), workers=1)
    if not protected:
        monkeypatch.setattr(share_module, "_refuse_links", lambda database: None)
    share = DatabaseShare(config, 0)
    try:
        assert [t.database for t in share.start(0.0, {})] == [str(alice / "app" / "shop.db")]
        swap = run_as(tenant, ["sh", "-c", f"mv '{alice}/app' '{alice}/app.old' && ln -s '{private}' '{alice}/app'"])
        assert swap.returncode == 0, swap.stderr
        entry = share.pop_due(1.0)
        assert entry is not None
        outcome = share.step(entry)
    finally:
        share.close()
    replica = str(replicas / "alice" / "app" / "shop.db")
    if protected:
        assert outcome.error is not None and "reached through a link" in str(outcome.error)
        assert restored_ids(replica) is None, "nothing of root's was written"
    else:
        assert restored_ids(replica) == secret, "control: root's database read into the replica"
    assert secret_rows(private / "shop.db") == secret
