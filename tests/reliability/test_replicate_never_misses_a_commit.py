"""Issue 11: ``ltxpool replicate`` never misses a commit, and ``verify`` agrees with restore.

Every case runs a real application (``tests.support.app_oracle``: each transaction takes a
sequence number inside the transaction; most run in their own short-lived process,
whose close checkpoints and deletes the WAL) beside real ``ltxpool replicate``
processes, then audits the replica with the replay oracle: the latest TXID and a
sample of earlier ones restore (``ltxpool restore --txid``) to exactly the replay of
the transactions they claim, each TXID a step wrote holds the state the database had
at that step, the latest is ``--compare`` equal to the database, and ``ltxpool
verify`` passes exactly when the latest TXID restores.

Controls: the short-lived-writer and re-creation workloads run again, in the same
test, through fresh ``Replicator(..., prove_completeness=False)`` objects (one per
step, as a new ``--once`` process) -- the old trust in a saved position -- and the
audit must find the loss there; that is the proof that the protected run could fail.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest

from ltxpool.replicate import Replicator
from tests.support.app_oracle import ROOT, App, Steps, api_once, audit

MODES = ["wal", "delete"]

# 12 commits (and 2 rolled-back transactions, which must appear nowhere), growth and
# shrink between looks; a look (replicate --once) after every third commit.
SHORT_LIVED = [
    "small", "small", "grow",
    "small", "shrink", "small",
    "grow", "rollback:small", "small", "small",
    "shrink", "small", "rollback:grow", "grow",
]


def _report(problems: list[str]) -> str:
    return "\n".join(problems)


def _short_lived_writers(app: App, steps: Steps) -> None:
    app.create()
    steps()
    commits = 0
    for kind in SHORT_LIVED:
        app.write(kind)  # one process per transaction
        if not kind.startswith("rollback:"):
            commits += 1
            if commits % 3 == 0:
                steps()
    assert commits == 12 and app.state == (1, 12) and app.rolled_back == 2


def _audited(app: App, steps: Steps, scratch: str, **options: object) -> list[str]:
    return steps.problems + audit(app, steps.root, scratch, claims=steps.claims, **options)  # type: ignore[arg-type]


def _control_loses(app: App, steps: Steps, scratch: str) -> list[str]:
    """What the audit finds in a control's replica (it stops at the first loss)."""
    return steps.problems or audit(app, steps.root, scratch, claims=steps.claims, sample=0, first_only=True)


@pytest.mark.parametrize("mode", MODES)
def test_once_between_short_lived_writers_misses_no_commit(tmp_path, mode):
    """Each transaction its own process (in WAL mode its close deletes the WAL, so every
    look sees a fresh empty WAL), ``replicate --once`` after every third: every TXID is
    exactly the database at its step. Control (WAL mode): trusting the saved position of
    an empty WAL loses commits in the same workload."""
    app = App(str(tmp_path / "app.db"), seed=11, mode=mode, auto_vacuum="full")
    steps = Steps(app, str(tmp_path / "replica"))
    _short_lived_writers(app, steps)
    problems = _audited(app, steps, str(tmp_path), sample=0)
    assert not problems, _report(problems)

    if mode == "wal":
        # In rollback mode the file change counter proves "no commit" for the same
        # file; the re-creation test below is that mode's control.
        control = App(str(tmp_path / "control.db"), seed=11, mode=mode, auto_vacuum="full")
        unproven = Steps(control, str(tmp_path / "control-replica"), partial(api_once, prove_completeness=False))
        _short_lived_writers(control, unproven)
        assert _control_loses(control, unproven, str(tmp_path)), (
            "control: with the completeness proof disabled the same workload lost nothing, "
            "so this test could not have caught the bug")


def _recreations(app: App, steps: Steps) -> None:
    """Rollback mode; the database removed and created again at the same path 5 times
    (twice overwritten in place, which keeps the inode for certain; removal and creation
    gets the freed inode back on ext4 and tmpfs): same shape each time, so the same file
    change counter and page count, other bytes. The last one continues the seq numbers."""
    for number in range(6):
        if number == 0:
            app.create()
        else:
            app.create(first_seq=None if number == 5 else 0, in_place=number in (2, 4))
        for kind in ("small", "grow", "small"):
            app.write(kind)
        steps()
    assert app.generation == 6


def test_database_recreated_at_the_same_path_is_replicated(tmp_path):
    """Rollback mode, ``--once`` after each re-creation: every TXID holds the generation
    that was there at its step (the oracle reads ``generation`` and replays that life).
    Control: trusting the saved (inode, change counter, page count) keeps the old
    database for a new one of the same shape."""
    app = App(str(tmp_path / "app.db"), seed=5, mode="delete", auto_vacuum="full")
    steps = Steps(app, str(tmp_path / "replica"))
    _recreations(app, steps)
    problems = _audited(app, steps, str(tmp_path), sample=0)
    assert not problems, _report(problems)
    assert sorted(state[0] for state in steps.claims.values()) == [1, 2, 3, 4, 5, 6]

    control = App(str(tmp_path / "control.db"), seed=5, mode="delete", auto_vacuum="full")
    unproven = Steps(control, str(tmp_path / "control-replica"), partial(api_once, prove_completeness=False))
    _recreations(control, unproven)
    assert _control_loses(control, unproven, str(tmp_path)), (
        "control: with the completeness proof disabled every re-creation was still seen, "
        "so this test could not have caught the bug")


@pytest.mark.parametrize("mode, replicate", [("wal", "once"), ("delete", "once"), ("delete", "continuous")])
def test_page_size_changes_are_captured_at_the_new_size(tmp_path, mode, replicate):
    """4096 -> 8192 -> 1024 -> 4096 (``PRAGMA page_size`` + VACUUM; WAL mode leaves WAL mode
    for it and comes back), a step after each change and after writes at each size:
    ``--once`` processes, and (rollback mode, where the app may change the page size while
    replicate runs) one long-lived ``Replicator`` stepping as the replicate loop does,
    whose connections saw the old page size."""
    app = App(str(tmp_path / "app.db"), seed=21, mode=mode)
    root = str(tmp_path / "replica")
    app.create()
    app.write("small", "grow")
    replicator = None
    if replicate == "continuous":
        replicator = Replicator(app.path, root, pin=True)
        steps = Steps(app, root, lambda db, root: (replicator.step(), replicator.state.txid)[1])
    else:
        steps = Steps(app, root)
    try:
        steps()
        for size in (8192, 1024, 4096):
            app.maintain(f"page-size-{size}")
            steps()
            app.write("small")
            app.write("grow" if size == 1024 else "shrink")
            steps()
    finally:
        if replicator is not None:
            replicator.close()
    problems = _audited(app, steps, str(tmp_path), sample=0)
    assert not problems, _report(problems)


def test_vacuum_journal_switches_checkpoints_spills_and_rollbacks_lose_nothing(tmp_path):
    """A long-lived app process (its connection keeps the WAL) runs checkpoints of every
    kind between looks -- a TRUNCATE between two looks leaves each of them an empty WAL
    with commits in between; then VACUUM, WAL -> rollback -> WAL, a ~60 MiB transaction
    spilled through a small cache, rolled-back transactions (one of them spilled, 8 MiB)."""
    app = App(str(tmp_path / "app.db"), seed=31, mode="wal")
    steps = Steps(app, str(tmp_path / "replica"))
    app.create()
    steps()
    with app.session() as session:
        session.tx("small")
        session.tx("grow")
        session.do("checkpoint-passive")
        steps()
        session.tx("small")
        session.rollback("grow")
        session.do("checkpoint-full")
        steps()
        session.tx("small")
        session.do("checkpoint-restart")
        session.tx("small")
        steps()
        session.tx("shrink")
        session.do("checkpoint-truncate")
        steps()
        session.tx("small")
        session.do("checkpoint-truncate")
        steps()
        session.do("vacuum")
        steps()
    app.maintain("journal-delete")
    steps()
    app.write("small")
    app.write("rollback:grow")
    app.write("grow")
    steps()
    app.maintain("vacuum")
    steps()
    app.maintain("journal-wal")
    app.write("small")
    steps()
    app.write("huge", cache_size=-256)  # 60 MiB through a 256 KiB cache: it spills before COMMIT
    huge = steps()
    app.write("rollback:spill", cache_size=-256)  # 8 MiB, spilled, then rolled back
    app.write("shrink")
    app.maintain("vacuum")
    steps()
    assert app.rolled_back == 3
    problems = _audited(app, steps, str(tmp_path), sample=0, must=[huge])
    assert not problems, _report(problems)


class _Replicate:
    """A continuous ``ltxpool replicate DB REPLICA --interval S`` process."""

    def __init__(self, db: str, root: str, interval: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ltxpool.cli", "replicate", db, root, "--interval", str(interval)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def wait_started(self, timeout: float = 20) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("replicate did not start in time") from None
        if not line.startswith("replicating "):
            assert self.process.stderr is not None
            self.process.kill()
            raise AssertionError(f"replicate did not start: {line!r} {self.process.stderr.read()}")
        return line

    def stop(self, signum: int) -> None:
        self.process.send_signal(signum)
        code = self.process.wait(30)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        assert code == (0 if signum == signal.SIGTERM else -signum), f"replicate exited {code}: {err}"


@pytest.mark.parametrize("mode", MODES)
def test_restarted_continuous_replicate_misses_no_commit(tmp_path, mode):
    """``replicate --interval 0.2`` stopped 8 times (SIGTERM and SIGKILL alternately) and
    started again, while long-lived writers (one process, many transactions, running
    across a stop) and short-lived writers commit; some runs see writes, some see an idle
    database. Every sampled TXID is the replay of what it claims, none is older than the
    one before, and after a last ``--once`` the latest holds every commit."""
    app = App(str(tmp_path / "app.db"), seed=41, mode=mode, auto_vacuum="full")
    root = str(tmp_path / "replica")
    app.create()
    app.write("grow")
    logs = iter(str(tmp_path / f"writer-{n}.log") for n in range(100))
    for round_ in range(8):
        replicate = _Replicate(app.path, root, 0.2)
        try:
            replicate.wait_started()
            writes_while_up = (round_ // 2) % 2 == 0
            writer = None
            if writes_while_up:
                log = next(logs)
                # Long-lived: runs on after this replicate is stopped.
                writer = app.writer(*["auto"] * 10, pause=0.05, log=log)
                time.sleep(0.25)
                app.write("small")
            time.sleep(0.5)
        finally:
            if replicate.process.poll() is None:
                signum = signal.SIGTERM if round_ % 2 == 0 else signal.SIGKILL
                replicate.stop(signum)
        # Down: short-lived writers, growth and shrink (auto_vacuum=full).
        app.write("small")
        app.write("grow" if round_ % 3 != 2 else "shrink")
        if writer is not None:
            app.collect(writer, log)
    steps = Steps(app, root)
    steps()
    assert app.state[1] > 40, app.state
    problems = _audited(app, steps, str(tmp_path), sample=6)
    assert not problems, _report(problems)
