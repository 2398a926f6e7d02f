"""Stalling the pool with a flock, as other local users would (issue 13), and the controls.

flock takes a shared or exclusive lock on any open descriptor, read-only included,
so whoever can open a lock file can hold it forever. Lock files are 0600 (0660 with
a configured lock group): ``nobody`` cannot open them. The control, in the same
run, gives a lock file the old 0644 mode: ``nobody``'s read-only ``LOCK_SH`` then
stalls the writer, whose wait ends at its deadline with an error naming ``nobody``.
Holders that *can* open the files (the pool's own user, root) are named when a wait
runs out, and a stranger's claim is never "nothing to do".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltxpool.locks.claim import CLAIM_NAME, Claim
from ltxpool.locks.dirlock import DirLock, holders_in, lock_file_names
from ltxpool.locks.errors import LockFileError, LockTimeout
from ltxpool.locks.lockfile import GROUP_LOCK_FILE_MODE, LOCK_FILE_MODE, LOCK_GROUP_VARIABLE
from ltxpool.replica.layout import STATE_DIR, Replica
from ltxpool.replicate.errors import ReplicaBusyError
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream
from tests.support.users import User, run_as, start_as

ALL_LOCK_FILES = [*lock_file_names(), CLAIM_NAME]
#: The attackers need only the standard library; the system's interpreter is one every
#: user can run (a venv's may sit under a directory only root can enter).
ATTACKER_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

#: As another user: try to open each lock file read-only and take a shared flock.
TRY_TO_FLOCK = """
import errno, fcntl, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        print(os.path.basename(path), errno.errorcode[exc.errno])
        continue
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    print(os.path.basename(path), "locked")
"""

#: As another user: hold a shared flock on one lock file until killed.
HOLD_SHARED = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(120)
"""


def make_lock_files(directory: Path) -> None:
    """Every lock file a level directory gets, made by the code that makes them in production."""
    with DirLock(directory) as lock, lock.cleaning(timeout=1.0):
        pass
    with Claim(directory) as claim, claim.held() as mine:
        assert mine


def modes(directory: Path) -> dict[str, int]:
    return {name: stat.S_IMODE(os.stat(directory / name).st_mode) for name in ALL_LOCK_FILES}


def attempt(user: User, directory: Path) -> dict[str, str]:
    done = run_as(user, [ATTACKER_PYTHON, "-c", TRY_TO_FLOCK, *(str(directory / name) for name in ALL_LOCK_FILES)])
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines())


@pytest.fixture
def holder_of(request: pytest.FixtureRequest) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def hold_as(user: User, path: Path, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = start_as(user, [ATTACKER_PYTHON, "-c", HOLD_SHARED, str(path)])
    started.append(process)
    assert process.stdout is not None
    assert process.stdout.readline() == "held\n", process.stderr.read() if process.stderr else ""
    return process


def test_nobody_cannot_open_a_lock_file_to_flock_it_and_with_the_old_0644_mode_it_stalls_the_writer(
    shared_tmp: str, nobody: User, holder_of: list[subprocess.Popen[str]]
) -> None:
    guarded = Path(shared_tmp, "guarded")
    guarded.mkdir(mode=0o755)
    make_lock_files(guarded)
    assert modes(guarded) == dict.fromkeys(ALL_LOCK_FILES, LOCK_FILE_MODE)
    assert attempt(nobody, guarded) == dict.fromkeys(ALL_LOCK_FILES, "EACCES")
    with DirLock(guarded, timeout=0.5) as lock, lock.writing():
        assert lock.last_wait < 0.5

    # Control: the same user, the same read-only flock, on a lock file of the old mode.
    old = Path(shared_tmp, "old-mode")
    old.mkdir(mode=0o755)
    for name in lock_file_names():
        os.close(os.open(old / name, os.O_RDWR | os.O_CREAT, 0o644))
    os.chmod(old / lock_file_names()[0], 0o644)
    attacker = hold_as(nobody, old / lock_file_names()[0], holder_of)
    with DirLock(old, timeout=0.5) as lock:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught, lock.writing():
            pytest.fail("nobody's shared flock must stall the writer of a 0644 lock file")
        waited = time.monotonic() - started
    error = caught.value
    assert [(h.pid, h.user, h.mode) for h in error.holders] == [(attacker.pid, "nobody", "READ")]
    assert re.fullmatch(rf"{re.escape(str(old))}: writing: busy, gave up after \d+\.\d ms; held by pid "
                        rf"{attacker.pid} \(user nobody, uid 65534, command python3\S*, READ\)", str(error)), str(error)
    # The pool owns the file, so opening it narrowed it to 0600: the next attacker is
    # refused. (An open descriptor keeps working: the mode must be right from the start.)
    assert stat.S_IMODE(os.stat(old / lock_file_names()[0]).st_mode) == LOCK_FILE_MODE
    assert attempt(nobody, old)[lock_file_names()[0]] == "EACCES"
    record("lock attack: nobody's flock, 0600 vs 0644", 1, refused=len(ALL_LOCK_FILES),
           control_stalled_writer_s=round(waited, 3))


def test_a_configured_lock_group_may_share_the_locks_and_nobody_else_may(
    shared_tmp: str, nobody: User, tenant: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_GROUP_VARIABLE, tenant.name)
    guarded = Path(shared_tmp, "grouped")
    guarded.mkdir(mode=0o755)
    # One lock file left behind by the old code (0644, root's group): narrowed and regrouped.
    os.close(os.open(guarded / CLAIM_NAME, os.O_RDWR | os.O_CREAT, 0o644))
    make_lock_files(guarded)
    for name in ALL_LOCK_FILES:
        st = os.stat(guarded / name)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (GROUP_LOCK_FILE_MODE, tenant.gid), name
    assert attempt(tenant, guarded) == dict.fromkeys(ALL_LOCK_FILES, "locked")
    assert attempt(nobody, guarded) == dict.fromkeys(ALL_LOCK_FILES, "EACCES")


def test_a_wait_held_up_by_a_process_of_the_pools_own_user_ends_at_its_deadline_and_names_it(
    tmp_path: Path,
) -> None:
    """0600 keeps other users out, not root or the pool's user: the deadline bounds those."""
    make_lock_files(tmp_path)
    holder = subprocess.Popen(["flock", "--close", "--shared", str(tmp_path / lock_file_names()[0]), "sleep", "60"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not holders_in(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(h.pid, h.command) for h in holders_in(tmp_path)[lock_file_names()[0]]] == [(holder.pid, "flock")]
        with DirLock(tmp_path, timeout=0.3) as lock:
            with pytest.raises(LockTimeout) as caught, lock.writing():
                pass
            with pytest.raises(LockTimeout), lock.cleaning(timeout=0.3):
                pass
        assert 0.3 <= caught.value.waited < 2.0
        assert f"held by pid {holder.pid} (user root, uid 0, command flock, READ)" in str(caught.value)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep: their own session
        holder.wait()
    with DirLock(tmp_path, timeout=1.0) as lock, lock.writing():
        pass


def test_compact_names_a_stranger_holding_a_claim_and_never_says_nothing_to_do(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=5)
    stream.run(3)
    level1 = Path(stream.replica.ensure_level_dir(1))
    make_lock_files(level1)
    holder = subprocess.Popen(["flock", "--close", str(level1 / CLAIM_NAME), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while CLAIM_NAME not in holders_in(level1) and time.monotonic() < deadline:
            time.sleep(0.01)
        held = subprocess.run([sys.executable, "-m", "ltxpool.cli", "compact", stream.replica.root, "--level", "1"],
                              capture_output=True, text=True, timeout=60)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep: their own session
        holder.wait()
    assert held.returncode == 2, held
    assert "nothing to do" not in held.stdout + held.stderr
    assert held.stderr.strip() == (f"level 1: not compacted: {level1 / CLAIM_NAME}: claim: claimed by a process that "
                                   f"is not a worker of this pool; held by pid {holder.pid} (user root, uid 0, "
                                   "command flock, WRITE)")
    # Control: the holder gone, the same command compacts (the level was due all along).
    free = subprocess.run([sys.executable, "-m", "ltxpool.cli", "compact", stream.replica.root, "--level", "1"],
                          capture_output=True, text=True, timeout=60)
    # (2 files: level 1 starts after the snapshot at TXID 1.)
    assert free.returncode == 0 and free.stdout.startswith("level 1: merged 2 files, TXID 2-3"), free


#: The application: commits in rollback-journal mode for ``seconds``, counts what failed.
APP_WRITES = r"""
import json, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
ok, locked, worst = 0, 0, 0.0
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    started = time.monotonic()
    try:
        conn.execute("INSERT INTO t VALUES (randomblob(3000))")
        ok += 1
    except sqlite3.OperationalError as exc:
        assert "database is locked" in str(exc), exc
        locked += 1
    worst = max(worst, time.monotonic() - started)
    time.sleep(0.01)
print(json.dumps({"ok": ok, "locked": locked, "worst": worst}))
"""


def app_while_replicate_is_stalled(database: Path, replica: Path, *,
                                   lock_inside_sqlite: bool) -> tuple[dict[str, float], list[LockTimeout]]:
    """Run the app for 3 s while replicate steps against a level 0 whose lock a stranger holds."""
    with Replicator(database, replica, lock_timeout=1.0, lock_inside_sqlite=lock_inside_sqlite) as replicator:
        assert replicator.step() is not None  # the snapshot, before the stranger comes
        gate = os.path.join(replicator.level0.path, lock_file_names()[0])
        holder = subprocess.Popen(["flock", "--close", gate, "sleep", "60"], start_new_session=True)
        timeouts: list[LockTimeout] = []
        try:
            deadline = time.monotonic() + 5
            while not holders_in(replicator.level0.path) and time.monotonic() < deadline:
                time.sleep(0.01)
            app = subprocess.Popen([sys.executable, "-c", APP_WRITES, str(database), "0.5", "3"],
                                   stdout=subprocess.PIPE, text=True)
            while app.poll() is None:
                try:
                    replicator.step()
                except LockTimeout as exc:
                    timeouts.append(exc)
            out, _ = app.communicate()
        finally:
            os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep: their own session
            holder.wait()
        assert timeouts and all(f"held by pid {holder.pid} (user root, uid 0, command flock, WRITE)" in str(t)
                                for t in timeouts), timeouts
        assert replicator.step() is not None  # the stranger gone, the changes go out
    return json.loads(out), timeouts


def test_replicate_never_waits_for_the_directory_inside_sqlite_so_the_apps_writes_go_on(tmp_path: Path) -> None:
    """Rollback journal: a read transaction holds SHARED, so the app cannot commit.

    A stranger holds level 0's lock; each replicate step waits for it (1 s deadline)
    *outside* SQLite, and the app (busy_timeout 0.5 s) never sees "database is
    locked". Control, same run: the old order, waiting inside the read transaction.
    """
    results = {}
    for name, inside in (("protected", False), ("control", True)):
        database = tmp_path / f"{name}.db"
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA journal_mode=delete")
            conn.execute("CREATE TABLE t(x)")
            conn.execute("INSERT INTO t VALUES (randomblob(3000))")
        conn.close()
        results[name], _ = app_while_replicate_is_stalled(database, tmp_path / f"{name}-replica",
                                                          lock_inside_sqlite=inside)
    protected, control = results["protected"], results["control"]
    assert protected["locked"] == 0 and protected["ok"] > 50, protected
    assert protected["worst"] < 0.5, protected
    assert control["locked"] >= 1, control
    record("replicate stalled by a stranger's flock: app writes", protected["ok"], protected=protected,
           control=control)


def test_replicate_refusing_a_claimed_replica_names_the_holder(tmp_path: Path) -> None:
    """The replica's replicate claim held by a stranger: refused (as before), now with who holds it."""
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE t(x)")
    conn.close()
    state = tmp_path / "replica" / STATE_DIR
    state.mkdir(parents=True)
    os.close(os.open(state / CLAIM_NAME, os.O_RDWR | os.O_CREAT, 0o600))
    holder = subprocess.Popen(["flock", "--close", str(state / CLAIM_NAME), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while CLAIM_NAME not in holders_in(state) and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ReplicaBusyError) as caught:
            Replicator(database, tmp_path / "replica")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep: their own session
        holder.wait()
    assert str(caught.value) == (f"{state}: claim replica: another ltxpool process (a replicate or a pool worker) "
                                 f"is writing to this replica; held by pid {holder.pid} (user root, uid 0, command flock, WRITE)")
    with Replicator(database, tmp_path / "replica") as replicator:  # control: once it is gone, replicate starts
        assert replicator.step() is not None


def test_a_lock_group_that_does_not_exist_is_refused_with_the_variable_and_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_GROUP_VARIABLE, "no-such-group-ltxpool")
    with DirLock(tmp_path) as lock, pytest.raises(LockFileError) as caught, lock.writing(timeout=1.0):
        pass
    assert str(caught.value) == f"{LOCK_GROUP_VARIABLE}: lock group: no group named 'no-such-group-ltxpool'"
    assert os.listdir(tmp_path) == []
