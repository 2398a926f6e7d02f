"""Hostile input: whatever lies in a replica, a clear error, quarantine or skip, and nothing outside touched.

Damaged files (bit flip, truncated, zero-length, wrong magic, absurd header and
index sizes), names that do not parse, symlinks planted where an LTX file, ``ltx/``,
a level directory, the quarantine folder, a temp name, a lock file or replicate's
state is expected, directories and files that cannot be read, and a replica root that
vanishes. For each: the janitor and the compactor raise a typed error or skip and
never crash; the commands print one line naming the file and the cause, with a
non-zero exit where the command could not do its job; and a file or directory
outside the replica that a symlink points at keeps its bytes and mtime.

Permission bits do not stop root, so unreadable directories are tested honestly in a
forked child that drops to ``nobody`` (uid 65534); a control runs the same call as
root and sees it succeed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ltxpool.replica.janitor as janitor_module
from ltxpool.cli import main as cli_main
from ltxpool.errors import LtxpoolError
from ltxpool.locks.errors import LockFileError
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.supervisor import remove_orphans
from ltxpool.replica.atomic import temp_name_for, write_atomic
from ltxpool.replica.compactor import CompactionSettings, compact_level, compaction_pass
from ltxpool.replica.errors import AtomicWriteError, RestorePlanError
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.quarantine import quarantined_files
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.helpers import FORK
from tests.support.synthetic import SyntheticStream

NOBODY = 65534
NOW_SETTINGS = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)


def fingerprint(path: Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Bytes, mtime and mode of ``path`` and everything under it, without following links."""
    paths = [path, *sorted(path.rglob("*"))] if path.is_dir() and not path.is_symlink() else [path]
    result = {}
    for entry in paths:
        st = os.lstat(entry)
        data = entry.read_bytes() if stat.S_ISREG(st.st_mode) else None
        result[os.path.relpath(entry, path.parent)] = (data, st.st_mtime_ns, st.st_mode)
    return result


@contextlib.contextmanager
def untouched(*paths: Path) -> Iterator[None]:
    """Assert that nothing in ``paths`` (outside the replica) changes inside the block."""
    before = {path: fingerprint(path) for path in paths}
    yield
    for path in paths:
        assert fingerprint(path) == before[path], f"{path} outside the replica was changed"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    """Run ``ltxpool ARGS`` in this process; (exit code, stdout lines, stderr lines)."""
    capsys.readouterr()
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def new_stream(root: Path, transactions: int, seed: int = 0) -> SyntheticStream:
    stream = SyntheticStream(Replica(root), seed=seed)
    stream.run(transactions)
    return stream


def level0(stream: SyntheticStream, txid: int) -> Path:
    return Path(stream.replica.path_of(0, txid, txid))


def temps_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*.tmp")]


# --- damaged files ---------------------------------------------------------------------------

def _set(blob: bytes, offset: int, value: bytes) -> bytes:
    return blob[:offset] + value + blob[offset + len(value):]


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "bit flip": (lambda blob: _set(blob, len(blob) // 2, bytes([blob[len(blob) // 2] ^ 0x10])), "checksum mismatch"),
    "truncated": (lambda blob: blob[: len(blob) * 2 // 3], "truncated"),
    "zero-length": (lambda blob: b"", "truncated"),
    "wrong magic": (lambda blob: b"SQLi" + blob[4:], "not an LTX file"),
    "absurd page size": (lambda blob: _set(blob, 8, b"\xff\xff\xff\xff"), "invalid page size"),
    "absurd commit": (lambda blob: _set(blob, 12, b"\xff\xff\xff\xff"), "checksum mismatch"),
    "absurd index length": (lambda blob: _set(blob, len(blob) - 24, b"\xff" * 8), "index length field says 1844"),
}


def damaged_replica(root: Path) -> tuple[SyntheticStream, dict[str, Path]]:
    """TXIDs 1..9 at level 0; TXIDs 2..8 each damaged one way."""
    stream = new_stream(root, 2 + len(DAMAGE), seed=8)
    bad = {}
    for txid, (kind, (damage, _)) in enumerate(DAMAGE.items(), start=2):
        path = level0(stream, txid)
        path.write_bytes(damage(path.read_bytes()))
        bad[kind] = path
    return stream, bad


def test_compaction_over_a_damaged_input_raises_corrupt_ltx_error_naming_it_and_writes_nothing(tmp_path: Path) -> None:
    for kind, (damage, reason) in DAMAGE.items():
        stream = new_stream(tmp_path / kind.replace(" ", "-"), 4, seed=1)
        path = level0(stream, 2)
        path.write_bytes(damage(path.read_bytes()))
        with pytest.raises(CorruptLTXError) as caught:
            compact_level(stream.replica, 1)
        assert caught.value.path == str(path) and reason in str(caught.value), kind
        assert stream.replica.list_level(1).files == [] and temps_under(tmp_path) == [], kind
    record("hostile: damaged compaction inputs", len(DAMAGE))


def test_janitor_quarantines_every_damaged_file_with_its_reason_and_keeps_the_rest(tmp_path: Path) -> None:
    stream, bad = damaged_replica(tmp_path / "replica")
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.quarantined == len(DAMAGE)
    quarantine = Path(stream.replica.quarantine_dir)
    for kind, path in bad.items():
        _, reason = DAMAGE[kind]
        lines = [line for line in report.problems if str(path) in line]
        assert len(lines) == 1 and reason in lines[0], (kind, report.problems)
        assert not path.exists()
        note = (quarantine / f"0-{path.name}.reason").read_text()
        assert str(path) in note and reason in note, kind
    assert sorted(quarantined_files(stream.replica)) == sorted(f"0-{path.name}" for path in bad.values())
    # The pool goes on: compaction stops at the gap the quarantine left, restore reaches TXID 1.
    compaction_pass(stream.replica, NOW_SETTINGS, time.time())
    plan = plan_restore(stream.replica.list_all())
    assert plan.max_txid == 1 and "gap after TXID 1" in plan.problems[0]
    restore(stream.replica, tmp_path / "restored.db", 1, check_integrity=False)
    assert (tmp_path / "restored.db").read_bytes() == stream.images[1]
    record("hostile: damaged files quarantined", report.quarantined)


def test_quarantine_keeps_the_damaged_bytes(tmp_path: Path) -> None:
    stream, bad = damaged_replica(tmp_path / "replica")
    contents = {path.name: path.read_bytes() for path in bad.values()}
    janitor_pass(stream.replica, JanitorSettings(), time.time())
    for name, data in contents.items():
        assert (Path(stream.replica.quarantine_dir) / f"0-{name}").read_bytes() == data


def test_commands_name_each_damaged_file_and_its_cause_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream, bad = damaged_replica(tmp_path / "replica")
    root = stream.replica.root

    code, out, _ = cli(capsys, "verify", root)
    assert code == 1
    summary = out.index(f"verified 9 files: 2 ok, {len(DAMAGE)} bad")
    for kind, path in bad.items():
        lines = [line for line in out[:summary] if str(path) in line]
        assert len(lines) == 1 and lines[0].startswith("BAD ") and DAMAGE[kind][1] in lines[0], (kind, out)
    # Then the replica as a whole: its latest TXID runs into a damaged file.
    assert out[summary + 1].startswith("BAD ") and "latest TXID does not restore" in out[summary + 1]
    assert out[summary + 2:] == ["checked 1 restore chain: 1 broken"]

    for args in (("restore", root, str(tmp_path / "out.db")), ("compact", root)):
        code, _, err = cli(capsys, *args)
        assert code == 1 and len(err) == 1, (args, err)
        named = [path for path in bad.values() if err[0].startswith(f"ltxpool: error: {path}: corrupt at byte")]
        assert len(named) == 1, (args, err)
    assert not (tmp_path / "out.db").exists()

    code, out, _ = cli(capsys, "janitor", root)
    assert code == 0
    for kind, path in bad.items():
        lines = [line for line in out if f"quarantined {path} ->" in line]
        assert len(lines) == 1 and DAMAGE[kind][1] in lines[0], (kind, out)
    assert f"quarantined: {len(DAMAGE)}" in out[-1]
    record("hostile: damaged files through verify/restore/compact/janitor", 4 * len(DAMAGE))


# --- names -----------------------------------------------------------------------------------

UNPARSEABLE = [
    "garbage.ltx",
    "0000000000000005.ltx",
    "00000000000000050000000000000005.ltx",
    "0000000000000006-0000000000000005.ltx",
    "0000000000000000-0000000000000000.ltx",
    "000000000000000A-000000000000000A.ltx",
    "0000000000000005-0000000000000005.ltx.bak",
    "notes.txt",
]


def test_unparseable_names_are_reported_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = new_stream(tmp_path / "replica", 4, seed=2)
    level = Path(stream.replica.level_dir(0))
    for name in UNPARSEABLE:
        (level / name).write_bytes(b"not an ltx file")
    (level / "0000000000000009-0000000000000009.ltx").mkdir()
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert {(g.directory, g.reason): g.names for g in report.skipped} == {
        (str(level), "name is not <min>-<max>.ltx"): frozenset(UNPARSEABLE),
        (str(level), "not a regular file (drwxr-xr-x; symlinks are not followed)"):
            {"0000000000000009-0000000000000009.ltx"},
    }
    for name in [*UNPARSEABLE, "0000000000000009-0000000000000009.ltx"]:
        assert (level / name).exists()
    assert report.quarantined == 0
    assert compact_level(stream.replica, 1) is not None
    restore(stream.replica, tmp_path / "out.db", check_integrity=False)
    assert (tmp_path / "out.db").read_bytes() == stream.images[4]
    code, out, _ = cli(capsys, "janitor", stream.replica.root)
    assert code == 0
    assert [line for line in out if line.startswith(f"  {len(UNPARSEABLE)} names skipped in {level} (name is not")]
    record("hostile: unparseable names", len(UNPARSEABLE) + 1)


# --- symlinks --------------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every replica, holding things worth protecting."""
    place = tmp_path / "outside"
    (place / "0").mkdir(parents=True)
    (place / "precious.db").write_bytes(b"precious " * 100)
    (place / "0" / temp_name_for("0000000000000001-0000000000000001.ltx")).write_bytes(b"someone else's temp")
    return place


def test_a_symlinked_ltx_file_is_skipped_reported_and_never_followed(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = new_stream(tmp_path / "replica", 5, seed=3)
    victim = level0(stream, 4)
    target = outside / victim.name
    shutil.move(victim, target)
    victim.symlink_to(target)
    with untouched(outside):
        eager = RetentionPolicy(level_retention={0: 0, 1: 0, 2: 0, 3: 0}, snapshot_retention=0)
        report = janitor_pass(stream.replica, JanitorSettings(retention=eager), time.time() + 60)
        assert report.quarantined == 0
        assert [g for g in report.skipped if g.directory == str(victim.parent) and victim.name in g.names
                and "not a regular file" in g.reason]
        compaction_pass(stream.replica, NOW_SETTINGS, time.time())
        # The skipped file leaves a gap: the latest TXID is refused, --allow-gap gives the one below.
        with pytest.raises(RestorePlanError, match="TXIDs 4-4 are in no file"):
            restore(stream.replica, tmp_path / "out.db", check_integrity=False)
        result = restore(stream.replica, tmp_path / "out.db", check_integrity=False, allow_gap=True)
        assert result.txid == 3 and (tmp_path / "out.db").read_bytes() == stream.images[3]
        code, out, _ = cli(capsys, "verify", stream.replica.root)
        assert code == 1
        assert [line for line in out if line.startswith(f"BAD {victim}:") and "symbolic link" in line]
    assert victim.is_symlink()
    record("hostile: symlink as an LTX file", 1)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_a_symlinked_level_directory_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str], level: int
) -> None:
    stream = new_stream(tmp_path / "replica", 4, seed=4)
    link = Path(stream.replica.level_dir(level))
    if link.exists():
        shutil.rmtree(link)
    link.symlink_to(outside / "0")
    with untouched(outside):
        report = janitor_pass(stream.replica, JanitorSettings(), time.time())
        assert [g for g in report.skipped if g.directory == str(link.parent) and link.name in g.names
                and "symlink" in g.reason]
        if level == 0:
            assert compaction_pass(stream.replica, NOW_SETTINGS, time.time()) == []
        else:
            with pytest.raises(LtxpoolError, match="symlink") as caught:
                compact_level(stream.replica, level)
            assert caught.value.path == str(link)
            code, _, err = cli(capsys, "compact", stream.replica.root, "--level", str(level))
            assert code == 1 and len(err) == 1 and str(link) in err[0] and "symlink" in err[0]
    assert link.is_symlink()
    record("hostile: symlink as a level directory", 1, level=level)


def test_a_symlinked_ltx_directory_is_refused_and_nothing_is_written_through_it(tmp_path: Path, outside: Path) -> None:
    source = new_stream(tmp_path / "source", 3, seed=5)
    for f in source.replica.list_level(0).files:
        shutil.copy(f.path, outside / "0")
    replica = Replica(tmp_path / "replica")
    Path(replica.root).mkdir()
    Path(replica.ltx_dir).symlink_to(outside)
    with untouched(outside):
        listings = replica.list_all()
        assert all(not listing.files for listing in listings.values())
        assert [reason for reason in (r for _, r in listings[0].skipped) if "symlink" in reason]
        janitor_pass(replica, JanitorSettings(), time.time())
        assert remove_orphans(PoolConfig(replicas=(replica.root,))) == 0
        with pytest.raises(LtxpoolError, match="symlink"):
            compact_level(replica, 1)
        assert compaction_pass(replica, NOW_SETTINGS, time.time()) == []
    record("hostile: symlink as ltx/", 1)


def test_a_symlinked_quarantine_folder_is_refused_and_the_file_stays_in_place(tmp_path: Path, outside: Path) -> None:
    stream = new_stream(tmp_path / "replica", 3, seed=6)
    bad = level0(stream, 2)
    bad.write_bytes(bad.read_bytes()[:-1])
    Path(stream.replica.quarantine_dir).symlink_to(outside)
    with untouched(outside):
        with pytest.raises(LtxpoolError, match="symlink") as caught:
            janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert caught.value.path == stream.replica.quarantine_dir
    assert bad.exists()
    record("hostile: symlink as the quarantine folder", 1)


def test_symlinks_under_temp_names_are_removed_as_links_and_their_targets_kept(tmp_path: Path, outside: Path) -> None:
    stream = new_stream(tmp_path / "replica", 2, seed=7)
    level = Path(stream.replica.level_dir(0))
    ours = level / temp_name_for("0000000000000003-0000000000000003.ltx")
    foreign = level / "0000000000000003-0000000000000003.ltx.tmp"
    ours.symlink_to(outside / "precious.db")
    foreign.symlink_to(outside / "0")
    old = time.time() - 7200
    os.utime(foreign, (old, old), follow_symlinks=False)
    with untouched(outside):
        report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.orphans_removed == 2
    assert not ours.is_symlink() and not foreign.is_symlink()
    record("hostile: symlinks under temp names", 2)


def test_a_symlink_planted_at_the_writers_temp_name_fails_the_write_and_is_not_followed(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "level"
    directory.mkdir()
    monkeypatch.setattr("ltxpool.replica.atomic.secrets.token_hex", lambda n: "deadbeef")
    final = directory / "0000000000000001-0000000000000001.ltx"
    (directory / temp_name_for(final.name)).symlink_to(outside / "precious.db")
    with untouched(outside):
        with pytest.raises(AtomicWriteError) as caught:
            write_atomic(final, b"x" * 100)
    assert (caught.value.step, caught.value.errno) == ("create", errno.EEXIST)
    assert not final.exists()
    record("hostile: symlink planted at the writer's temp name", 1)


@pytest.mark.parametrize("name", [".ltxpool.lock", ".ltxpool.slot-00", ".ltxpool.slot-15", ".ltxpool.claim"])
def test_a_symlinked_lock_file_is_refused_and_never_followed(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """The gate and the claim are taken by every writer, so a link there stops every write
    into the directory; a writer takes one free slot, so a linked slot stops it only when
    it is the one tried. The janitor takes the gate and every slot."""
    stream = new_stream(tmp_path / "replica", 3, seed=8)
    lock = Path(stream.replica.ensure_level_dir(1)) / name
    lock.symlink_to(outside / "precious.db")
    level = Path(stream.replica.level_dir(0))
    (level / name).unlink(missing_ok=True)
    (level / name).symlink_to(outside / "precious.db")
    orphan = level / temp_name_for("0000000000000004-0000000000000004.ltx")
    orphan.write_bytes(b"orphan")
    every_writer_stops = name in (".ltxpool.lock", ".ltxpool.claim")
    with untouched(outside):
        try:
            compact_level(stream.replica, 1)
        except LockFileError as exc:
            assert (exc.path, exc.step, exc.errno) == (str(lock), "open lock file", errno.ELOOP)
        else:
            assert not every_writer_stops
        if every_writer_stops:
            code, _, err = cli(capsys, "compact", stream.replica.root, "--level", "1")
            assert code == 1 and len(err) == 1 and str(lock) in err[0] and "ELOOP" in err[0], err
        if name != ".ltxpool.claim":  # the janitor takes the directory lock, not the claim
            with pytest.raises(LockFileError) as caught:
                janitor_pass(stream.replica, JanitorSettings(), time.time())
            assert caught.value.path == str(level / name)
            code, _, err = cli(capsys, "janitor", stream.replica.root)
            assert code == 1 and len(err) == 1 and str(level / name) in err[0] and "ELOOP" in err[0], err
            assert orphan.exists(), "removed without holding the lock"
    record("hostile: symlink as a lock file", 1, name=name)


def test_a_symlink_in_replicates_state_is_not_written_through(tmp_path: Path, outside: Path) -> None:
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t(x)")
        connection.execute("INSERT INTO t VALUES (randomblob(3000))")
    connection.close()
    root = tmp_path / "replica"
    with Replicator(database, root) as replicator:
        assert replicator.step() is not None
    state = root / ".ltxpool-replicate"
    (state / "checksums").unlink()
    (state / "checksums").symlink_to(outside / "precious.db")
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO t VALUES (randomblob(3000))")
    connection.close()
    with untouched(outside), pytest.raises(LtxpoolError) as caught:  # noqa: SIM117 - the error may come at either
        with Replicator(database, root) as replicator:
            replicator.step()
    assert (caught.value.path, caught.value.errno) == (str(state / "checksums"), errno.ELOOP)
    record("hostile: symlink in replicate's state", 1)


# --- unreadable directories and files (as nobody) -------------------------------------------

@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path sits under a 0700 directory)."""
    place = Path(tempfile.mkdtemp(prefix="ltxpool-hostile-", dir="/tmp"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        for dirpath, dirnames, _ in os.walk(place):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(place)


def _as_nobody(conn: Any, call: Callable[[], Any]) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        conn.send(("ok", os.geteuid(), call()))
    except Exception as exc:  # noqa: BLE001 - the parent judges what came back
        conn.send(("raised", os.geteuid(), exc))


def run_as_nobody(call: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``call`` in a forked child that has dropped to uid/gid 65534; (outcome, value)."""
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_as_nobody, args=(send, call))
    child.start()
    send.close()
    outcome, uid, value = receive.recv()
    child.join(10)
    assert uid == NOBODY
    return outcome, value


def cli_lines(*args: str) -> tuple[int, list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def chown_tree(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.lchown(root, NOBODY, NOBODY)


def test_an_unreadable_level_directory_is_a_typed_error_for_nobody_and_one_line_per_command(shared_dir: Path) -> None:
    stream = new_stream(shared_dir / "replica", 4, seed=9)
    compact_level(stream.replica, 1)
    stream.run(2)
    chown_tree(shared_dir / "replica")
    locked = Path(stream.replica.level_dir(0))
    locked.chmod(0o000)
    settings = JanitorSettings()

    outcome, value = run_as_nobody(lambda: janitor_pass(stream.replica, settings, time.time()))
    assert outcome == "raised" and isinstance(value, LtxpoolError), value
    assert (value.path, value.errno) == (str(locked), errno.EACCES)
    outcome, value = run_as_nobody(lambda: compaction_pass(stream.replica, NOW_SETTINGS, time.time()))
    assert outcome == "raised" and isinstance(value, LtxpoolError), value
    assert (value.path, value.errno) == (str(locked), errno.EACCES)
    commands = [("verify", stream.replica.root), ("restore", stream.replica.root, str(shared_dir / "out.db")),
                ("compact", stream.replica.root), ("janitor", stream.replica.root)]
    for args in commands:
        outcome, (code, _, err) = run_as_nobody(lambda args=args: cli_lines(*args))
        assert outcome == "ok" and code != 0 and len(err) == 1, (args, code, err)
        assert str(locked) in err[0] and "Permission denied" in err[0], (args, err)
    # Control: root is not stopped by the permission bits, so the same pass succeeds.
    janitor_pass(stream.replica, settings, time.time())
    record("hostile: unreadable level directory as nobody", 2 + len(commands))


def test_an_unreadable_ltx_file_is_reported_not_quarantined_and_verify_names_it(shared_dir: Path) -> None:
    stream = new_stream(shared_dir / "replica", 4, seed=10)
    chown_tree(shared_dir / "replica")
    secret = level0(stream, 3)
    secret.chmod(0o000)
    settings = JanitorSettings()
    outcome, report = run_as_nobody(lambda: janitor_pass(stream.replica, settings, time.time()))
    assert outcome == "ok", report
    assert report.quarantined == 0
    assert [p for p in report.problems if str(secret) in p and "Permission denied" in p], report.problems
    outcome, (code, out, _) = run_as_nobody(lambda: cli_lines("verify", stream.replica.root))
    assert outcome == "ok" and code == 1
    assert [line for line in out if line.startswith(f"BAD {secret}:") and "Permission denied" in line], out
    outcome, (code, _, err) = run_as_nobody(
        lambda: cli_lines("restore", stream.replica.root, str(shared_dir / "out.db")))
    assert code == 1 and len(err) == 1 and str(secret) in err[0] and "Permission denied" in err[0]
    assert secret.exists() and quarantined_files(stream.replica) == []
    record("hostile: unreadable LTX file as nobody", 3)


# --- a vanishing replica root ----------------------------------------------------------------

def test_a_replica_root_removed_between_rounds_is_skipped_and_not_recreated(tmp_path: Path) -> None:
    stream = new_stream(tmp_path / "replica", 3, seed=11)
    shutil.rmtree(stream.replica.root)
    assert compaction_pass(stream.replica, NOW_SETTINGS, time.time()) == []
    report = janitor_pass(stream.replica, JanitorSettings(), time.time())
    assert report.problems == []
    assert not os.path.exists(stream.replica.root)
    record("hostile: replica root vanished between rounds", 1)


def test_a_replica_root_removed_during_a_compaction_pass_is_a_typed_error_and_not_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = new_stream(tmp_path / "replica", 3, seed=12)
    real_list_all = Replica.list_all
    calls = 0

    def list_then_vanish(self: Replica) -> Any:
        nonlocal calls
        listings = real_list_all(self)
        calls += 1
        if calls == 1:
            shutil.rmtree(self.root)
        return listings

    monkeypatch.setattr(Replica, "list_all", list_then_vanish)
    try:
        compaction_pass(stream.replica, NOW_SETTINGS, time.time())
    except LtxpoolError as exc:
        assert exc.errno == errno.ENOENT and exc.path.startswith(stream.replica.root)
    assert calls >= 1
    assert not os.path.exists(stream.replica.root), "the compactor recreated a replica that was removed"
    record("hostile: replica root vanished during compaction", calls)


def test_a_replica_root_removed_during_a_janitor_round_does_not_break_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = new_stream(tmp_path / "replica", 3, seed=13)
    (Path(stream.replica.level_dir(0)) / temp_name_for("0000000000000004-0000000000000004.ltx")).write_bytes(b"x")
    real_sweep = janitor_module.sweep_temp_files

    def sweep_then_vanish(directory: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_sweep(directory, *args, **kwargs)
        shutil.rmtree(stream.replica.root, ignore_errors=True)
        return result

    monkeypatch.setattr(janitor_module, "sweep_temp_files", sweep_then_vanish)
    try:
        janitor_pass(stream.replica, JanitorSettings(), time.time())
    except LtxpoolError as exc:
        assert exc.errno == errno.ENOENT
    assert not os.path.exists(stream.replica.root)
    record("hostile: replica root vanished during a janitor round", 1)


# --- the pool facing all of it at once ------------------------------------------------------

POOL_CONFIG = """
workers = 2
[compaction]
intervals = { 1 = 0.2, 2 = 0.5, 3 = 1.0 }
snapshot_interval = 2.0
poll_interval = 0.05
[janitor]
interval = 0.2
[supervisor]
grace = 5
restart_backoff = 0.1
"""


def test_the_pool_survives_every_hostile_replica_and_keeps_serving_the_healthy_one(
    tmp_path: Path, outside: Path
) -> None:
    healthy = new_stream(tmp_path / "healthy", 2, seed=20)
    damaged, bad = damaged_replica(tmp_path / "damaged")
    linked = new_stream(tmp_path / "linked", 3, seed=21)
    link_level = Path(linked.replica.level_dir(1))
    link_level.symlink_to(outside / "0")
    locked = new_stream(tmp_path / "locked", 3, seed=23)
    claim = Path(locked.replica.ensure_level_dir(1)) / ".ltxpool.claim"
    claim.symlink_to(outside / "precious.db")
    vanishing = new_stream(tmp_path / "vanishing", 3, seed=22)
    config = tmp_path / "pool.toml"
    config.write_text(POOL_CONFIG)
    roots = [healthy.replica.root, damaged.replica.root, linked.replica.root, locked.replica.root,
             vanishing.replica.root]
    with untouched(outside):
        pool = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "supervise", "--config", str(config), *roots],
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                healthy.transaction()
                time.sleep(0.02)
            while os.path.exists(vanishing.replica.root):
                # rm -rf racing the pool, which may be writing into it right now.
                shutil.rmtree(vanishing.replica.root, ignore_errors=True)
            vanished_at = healthy.txid
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                healthy.transaction()
                time.sleep(0.02)
            time.sleep(0.5)
        finally:
            pool.send_signal(signal.SIGTERM)
            _, log = pool.communicate(timeout=30)
    assert pool.returncode == 0, log
    lines = log.splitlines()
    assert not [line for line in lines if "crashed" in line or "giving up" in line or "Traceback" in line], log
    assert max(f.max_txid for f in healthy.replica.list_level(1).files) > vanished_at, log
    assert len(quarantined_files(damaged.replica)) == len(DAMAGE), log
    assert [line for line in lines if str(link_level) in line and "symlink" in line], log
    assert [line for line in lines if f"compaction failed: {claim}: open lock file" in line], log
    assert not os.path.exists(vanishing.replica.root), "the pool recreated a removed replica"
    restore(healthy.replica, tmp_path / "healthy.db", check_integrity=False)
    assert (tmp_path / "healthy.db").read_bytes() == healthy.images[healthy.txid]
    record("hostile: pool run over damaged, symlinked and vanishing replicas", 3,
           log_lines=len(lines), quarantined=len(DAMAGE))
