"""A tenant who owns its replica swaps its folders for symlinks while root's pool works in it.

Each attack is the one #13 found working: the tenant (a real user made for the
session, running real ``mv``/``ln`` processes) replaces a folder of its own replica
with a symlink to a root-only folder or to another replica, at the worst moment,
while root's janitor, quarantine, retention, compactor or replicate waits for a lock
(the swap runs from inside the wait) or between two steps. Every attack is run twice
in the same session:

* protected: nothing outside the tenant's replica changes (fingerprints of a
  root-only decoy folder and of another replica), and the work lands in the tenant's
  own folder;
* control: the protection switched off (every ``Directory`` operation resolves its
  path again at the moment it runs, as the code did before: "check, wait, act by
  path"), and the same attack reaches outside the replica.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ltxpool.locks.dirlock import DirLock
from ltxpool.ltx import verify_file
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.directory import Directory
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream
from tests.support.users import User, run_as

PROTECTED = [pytest.param(True, id="protected"), pytest.param(False, id="control-by-path")]
RETAIN_NOTHING = JanitorSettings(retention=RetentionPolicy(level_retention={0: 0, 1: 0, 2: 0, 3: 0}))


def fingerprint(path: Path) -> dict[str, tuple[bytes | None, int]]:
    """Bytes and mode of everything under ``path``, without following links."""
    result = {}
    for entry in [path, *sorted(path.rglob("*"))]:
        st = os.lstat(entry)
        result[os.path.relpath(entry, path)] = (entry.read_bytes() if stat.S_ISREG(st.st_mode) else None, st.st_mode)
    return result


def chown_tree(root: Path, user: User) -> None:
    for entry in [root, *root.rglob("*")]:
        os.chown(entry, user.uid, user.gid, follow_symlinks=False)


def swap_for_link(tenant: User, folder: Path, target: Path) -> None:
    """As the tenant: move ``folder`` aside and put a symlink to ``target`` in its place."""
    result = run_as(tenant, ["sh", "-c", 'mv "$1" "$1.moved" && ln -s "$2" "$1"', "swap", str(folder), str(target)])
    assert result.returncode == 0, result.stderr


@pytest.fixture
def by_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """The control: make every Directory operation resolve its path again, following links."""
    opened: list[int] = []

    def switch_off() -> None:
        def fd_by_path(self: Directory) -> int:
            opened.append(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            return opened[-1]

        monkeypatch.setattr(Directory, "fd", property(fd_by_path))
        monkeypatch.setattr(Directory, "close", lambda self: None)

    yield switch_off
    monkeypatch.undo()
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def during_lock_waits(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Run an action (the tenant's swap) from inside the next wait for a directory lock."""

    def arm(action: Callable[[], None]) -> None:
        pending = [action]
        real_cleaning, real_writing = DirLock.cleaning, DirLock.writing

        def fire() -> None:
            while pending:
                pending.pop()()

        def cleaning(self: DirLock, *args: Any, **kwargs: Any) -> Any:
            fire()
            return real_cleaning(self, *args, **kwargs)

        def writing(self: DirLock, *args: Any, **kwargs: Any) -> Any:
            fire()
            return real_writing(self, *args, **kwargs)

        monkeypatch.setattr(DirLock, "cleaning", cleaning)
        monkeypatch.setattr(DirLock, "writing", writing)

    return arm


@pytest.fixture
def host(shared_tmp: str, tenant: User) -> dict[str, Path]:
    """A tenant-owned replica, another replica (root's) and a root-only folder, side by side."""
    base = Path(shared_tmp)
    decoy = base / "root-only"
    decoy.mkdir(mode=0o700)
    (decoy / "precious.conf").write_bytes(b"root's own file\n")
    mine = SyntheticStream(Replica(base / "tenant-replica"), seed=11)
    mine.run(6)
    other = SyntheticStream(Replica(base / "other-replica"), seed=12)
    other.run(6)
    chown_tree(base / "tenant-replica", tenant)
    return {"base": base, "decoy": decoy, "tenant": base / "tenant-replica", "other": base / "other-replica"}


@pytest.mark.parametrize("protected", PROTECTED)
def test_the_janitors_temp_sweep_never_deletes_outside_the_replica(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
    during_lock_waits: Callable[[Callable[[], None]], None],
) -> None:
    name = temp_name_for("0000000000000005-0000000000000005.ltx")
    (host["decoy"] / name).write_bytes(b"root's write in flight elsewhere")
    planted = host["tenant"] / "ltx" / "0" / name
    planted.write_bytes(b"orphan")
    os.chown(planted, tenant.uid, tenant.gid)
    before = fingerprint(host["decoy"])
    during_lock_waits(lambda: swap_for_link(tenant, host["tenant"] / "ltx" / "0", host["decoy"]))
    if not protected:
        by_path()
    report = janitor_pass(Replica(host["tenant"]), JanitorSettings(), time.time())
    if protected:
        assert fingerprint(host["decoy"]) == before
        assert report.orphans_removed == 1 and not (host["tenant"] / "ltx" / "0.moved" / name).exists()
    else:
        assert not (host["decoy"] / name).exists(), "control: the by-path sweep deleted root's temp file elsewhere"
    record(f"tenant swap during janitor sweep ({'protected' if protected else 'control'})", 1)


@pytest.mark.parametrize("protected", PROTECTED)
def test_quarantine_moves_only_the_tenants_file_into_the_tenants_folder(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
    during_lock_waits: Callable[[Callable[[], None]], None],
) -> None:
    victim = Replica(host["other"]).list_level(0).files[2].name
    corrupt = host["tenant"] / "ltx" / "0" / victim
    corrupt.write_bytes(corrupt.read_bytes()[:-7])
    (host["tenant"] / "quarantine").mkdir()
    os.chown(host["tenant"] / "quarantine", tenant.uid, tenant.gid)
    others_before, decoy_before = fingerprint(host["other"]), fingerprint(host["decoy"])

    def attack() -> None:
        swap_for_link(tenant, host["tenant"] / "ltx" / "0", host["other"] / "ltx" / "0")
        swap_for_link(tenant, host["tenant"] / "quarantine", host["decoy"])

    during_lock_waits(attack)
    if not protected:
        by_path()
    janitor_pass(Replica(host["tenant"]), JanitorSettings(), time.time())
    if protected:
        assert fingerprint(host["other"]) == others_before and fingerprint(host["decoy"]) == decoy_before
        assert (host["tenant"] / "quarantine.moved" / f"0-{victim}").exists()
    else:
        moved = not (host["other"] / "ltx" / "0" / victim).exists() or (host["decoy"] / f"0-{victim}").exists()
        assert moved, "control: the by-path quarantine moved a file across the replica's boundary"


@pytest.mark.parametrize("protected", PROTECTED)
def test_retention_never_deletes_another_replicas_file(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
    during_lock_waits: Callable[[Callable[[], None]], None],
) -> None:
    compact_level(Replica(host["tenant"]), 1)
    chown_tree(host["tenant"], tenant)
    other = Replica(host["other"])
    before = fingerprint(host["other"])
    expected = host["base"] / "expected.db"
    restore(other, expected, check_integrity=False)
    during_lock_waits(lambda: swap_for_link(tenant, host["tenant"] / "ltx" / "0", host["other"] / "ltx" / "0"))
    if not protected:
        by_path()
    report = janitor_pass(Replica(host["tenant"]), RETAIN_NOTHING, time.time() + 10)
    if protected:
        assert report.retention_removed > 0
        assert fingerprint(host["other"]) == before
        restore(other, host["base"] / "after.db", check_integrity=False)
        assert (host["base"] / "after.db").read_bytes() == expected.read_bytes()
    else:
        assert fingerprint(host["other"]) != before, "control: by-path retention deleted another replica's files"


@pytest.mark.parametrize("protected", PROTECTED)
def test_the_compactor_never_writes_into_a_folder_the_link_names(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
    during_lock_waits: Callable[[Callable[[], None]], None],
) -> None:
    level1 = host["tenant"] / "ltx" / "1"
    level1.mkdir()
    os.chown(level1, tenant.uid, tenant.gid)
    before = fingerprint(host["decoy"])
    during_lock_waits(lambda: swap_for_link(tenant, level1, host["decoy"]))
    if not protected:
        by_path()
    result = compact_level(Replica(host["tenant"]), 1)
    assert result is not None
    if protected:
        assert fingerprint(host["decoy"]) == before
        written = [p for p in (host["tenant"] / "ltx" / "1.moved").iterdir() if p.name.endswith(".ltx")]
        assert len(written) == 1
        verify_file(written[0])
    else:
        assert any(p.name.endswith(".ltx") for p in host["decoy"].iterdir()), (
            "control: the by-path compactor wrote into the root-only folder"
        )


@pytest.mark.parametrize("protected", PROTECTED)
def test_replicates_state_is_never_written_through_a_swapped_folder(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
) -> None:
    database = host["base"] / "tenant.db"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE t(x)")
        connection.execute("INSERT INTO t VALUES (randomblob(3000))")
    os.chown(database, tenant.uid, tenant.gid)
    root = host["base"] / "tenant-db-replica"
    before = fingerprint(host["decoy"])
    if not protected:
        by_path()
    with Replicator(database, root) as replicator:
        assert replicator.step() is not None
        assert os.stat(root).st_uid == tenant.uid, "the replica takes the database's owner"
        swap_for_link(tenant, root / ".ltxpool-replicate", host["decoy"])
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            connection.execute("INSERT INTO t VALUES (randomblob(3000))")
        assert replicator.step() is not None
    if protected:
        assert fingerprint(host["decoy"]) == before
        assert (root / ".ltxpool-replicate.moved" / "state.json").exists()
    else:
        assert (host["decoy"] / "state.json").exists(), "control: by-path state writes landed in the root-only folder"


class _FollowingLinks:
    """The control for the database swap: ``os`` as the source saw it before, following links."""

    O_NOFOLLOW = 0

    def __getattr__(self, name: str) -> Any:
        return os.stat if name == "lstat" else getattr(os, name)


SECRET = b"ROOT-ONLY-PAYROLL-4242"


@pytest.mark.parametrize("protected", PROTECTED)
def test_a_database_swapped_for_a_link_to_roots_database_is_never_replicated(
    host: dict[str, Path], tenant: User, protected: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """#13 review: the tenant renames a symlink to a root-only database over its own, between steps."""
    from ltxpool.replicate import sqlite_source
    from ltxpool.replicate.errors import SourceError

    secret = host["decoy"] / "secret.db"
    with contextlib.closing(sqlite3.connect(secret)) as connection, connection:
        connection.execute("CREATE TABLE pay(x)")
        connection.execute("INSERT INTO pay VALUES (?)", (SECRET,))
    os.chmod(secret, 0o600)
    folder = host["base"] / "tenant-app"
    folder.mkdir()
    database = folder / "app.db"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE t(x)")
        connection.execute("INSERT INTO t VALUES ('mine')")
    chown_tree(folder, tenant)
    root = host["base"] / "tenant-app-replica"
    with Replicator(database, root) as replicator:
        assert replicator.step() is not None
        swapped = run_as(tenant, ["sh", "-c", f'ln -s "{secret}" "{folder}/new" && mv -T "{folder}/new" "{database}"'])
        assert swapped.returncode == 0, swapped.stderr
        if protected:
            with pytest.raises(SourceError, match="symbolic link"):
                replicator.step()
        else:
            monkeypatch.setattr(sqlite_source, "os", _FollowingLinks())
            replicator.source._access = None  # the owner and mode check off, too
            assert replicator.step() is not None
    leaked = [p for p in root.rglob("*.ltx") if SECRET in _decoded(p)]
    if protected:
        assert leaked == []
    else:
        assert leaked, "control: following the link replicates root's database into the tenant's replica"


def _decoded(path: Path) -> bytes:
    from ltxpool.ltx import open_ltx

    with open_ltx(path) as decoder:
        return b"".join(page for _, page in decoder.pages())


@pytest.mark.timeout(60)
def test_fifos_planted_in_replicates_state_never_hang_restore_or_replicate(
    host: dict[str, Path], tenant: User,
) -> None:
    """#13 review: the tenant owns ``.ltxpool-replicate`` and puts FIFOs where root reads."""
    import threading

    from ltxpool.replica.errors import TxidRecordError

    database = host["base"] / "fifo.db"
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("CREATE TABLE t(x)")
    os.chown(database, tenant.uid, tenant.gid)
    root = host["base"] / "fifo-replica"
    with Replicator(database, root) as replicator:
        assert replicator.step() is not None
    state = root / ".ltxpool-replicate"
    planted = run_as(tenant, ["sh", "-c", f'cd "{state}" && rm -f state.json && mkfifo state.json'])
    assert planted.returncode == 0, planted.stderr
    with Replicator(database, root) as replicator:  # state.json is a FIFO: rebuilt from the replica
        assert "rebuilt" in replicator.recovery
    planted = run_as(tenant, ["sh", "-c", f'cd "{state}" && rm -f txids && mkfifo txids'])
    assert planted.returncode == 0, planted.stderr
    result = restore(Replica(root), host["base"] / "out.db")
    assert not result.checksum_verified  # the FIFO is no record
    with pytest.raises(TxidRecordError, match="not a regular file"):  # at once, naming it
        Replicator(database, root)
    # Control: a plain blocking open of the same FIFO does hang, until a writer comes.
    opened = threading.Event()
    reader = threading.Thread(target=lambda: (os.close(os.open(state / "txids", os.O_RDONLY)), opened.set()))
    reader.start()
    assert not opened.wait(0.5), "control: a blocking open of a FIFO waits for a writer"
    os.close(os.open(state / "txids", os.O_WRONLY))
    reader.join(5)
    assert opened.is_set()


@pytest.mark.parametrize("protected", PROTECTED)
def test_a_folder_swapped_for_a_link_after_an_idle_janitor_round_leads_the_janitor_nowhere_outside(
    host: dict[str, Path], tenant: User, protected: bool, by_path: Callable[[], None],
    during_lock_waits: Callable[[Callable[[], None]], None],
) -> None:
    """#15: the janitor leaves an unchanged replica alone on an lstat per level. After an idle
    round, the tenant plants an orphan and swaps ``ltx/0`` for a link to a root-only folder
    during the lock wait of the next round; then, with the link in place, a third round."""
    from ltxpool.pool.config import PoolConfig
    from ltxpool.pool.roles import janitor_main
    from ltxpool.replica.janitor_memory import JanitorMemory
    from tests.support.helpers import RoundsLink

    config = PoolConfig(replicas=(str(host["tenant"]), str(host["other"])), janitor_interval=0.0)
    memory = JanitorMemory()
    time.sleep(1.1)  # past the racy second of the replicas just built
    idle = RoundsLink(2)
    janitor_main(idle, config, {}, memory=memory)
    assert [(r.examined, r.unchanged) for r in idle.round_events] == [(2, 0), (0, 2)]
    name = temp_name_for("0000000000000005-0000000000000005.ltx")
    (host["decoy"] / name).write_bytes(b"root's write in flight elsewhere")
    planted = host["tenant"] / "ltx" / "0" / name
    planted.write_bytes(b"orphan")
    os.chown(planted, tenant.uid, tenant.gid)
    decoy_before, others_before = fingerprint(host["decoy"]), fingerprint(host["other"])
    during_lock_waits(lambda: swap_for_link(tenant, host["tenant"] / "ltx" / "0", host["decoy"]))
    if not protected:
        by_path()
    swapped = RoundsLink(1)
    janitor_main(swapped, config, {}, memory=memory)
    if not protected:
        assert not (host["decoy"] / name).exists(), "control: the by-path sweep deleted root's temp file elsewhere"
        return
    assert fingerprint(host["decoy"]) == decoy_before and fingerprint(host["other"]) == others_before
    assert not (host["tenant"] / "ltx" / "0.moved" / name).exists()
    assert [(r.replica, r.orphans_removed) for r in swapped.reports(0)] == [(str(host["tenant"]), 1)]
    assert swapped.round_events[0].unchanged == 1, "the other replica, unchanged, was left alone"
    # The link in place: its lstat is another inode, so the replica gets its full pass, which refuses the link.
    after = RoundsLink(2)
    janitor_main(after, config, {}, memory=memory)
    assert fingerprint(host["decoy"]) == decoy_before
    assert [(r.examined, r.unchanged) for r in after.round_events] == [(0, 1), (0, 1)], (
        "the tenant's replica gets its pass every round (level 0 refused, never listed); the other is left alone")
    assert (host["decoy"] / name).exists()
