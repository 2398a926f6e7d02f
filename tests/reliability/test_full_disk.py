"""A real full disk: a 2 MiB tmpfs that fills up under compaction, restore and replicate.

No injected errno here: the kernel says ENOSPC. A filler file takes the space (all of
it, or all but a few KiB so that a write fails part-way), the work is tried, and then
the filler goes. While the disk is full every failure must be a typed error naming the
file, the step and ENOSPC, nothing partial may stay under a final name, no temp file
may stay behind, and once space returns the same work must succeed and restore must
give back the source page for page.

Mounting needs CAP_SYS_ADMIN (we run as root, CI too). If tmpfs cannot be mounted, a
loop-mounted ext4 image is tried; if neither works the test fails and says why
rather than skipping.
"""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ltxpool.cli import main as cli_main
from ltxpool.errors import LtxpoolError
from ltxpool.ltx import verify_file
from ltxpool.replica.compactor import CompactionSettings, compact_level, compaction_pass
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import LEVELS, SNAPSHOT_LEVEL, Replica
from ltxpool.replica.plan import coverage_gaps, plan_restore
from ltxpool.replica.restore import restore
from ltxpool.replicate.replicator import Replicator
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream

WRITE_STEPS = {"create", "write", "fsync", "close", "rename", "fsync-dir", "write checksums"}


def _mount(*args: str) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


@contextmanager
def small_filesystem(where: Path, size_mib: int = 2) -> Iterator[Path]:
    """A filesystem of ``size_mib`` MiB mounted at ``where`` for the block; unmounted after."""
    where.mkdir()
    tmpfs_error = _mount("-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(where))
    if tmpfs_error is not None:
        image = where.with_suffix(".img")
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
        loop_error = made.stderr.strip() if made.returncode else _mount("-o", "loop", str(image), str(where))
        if loop_error is not None:
            pytest.fail(f"cannot mount a small filesystem (needs CAP_SYS_ADMIN): tmpfs: {tmpfs_error}; "
                        f"loop ext4: {loop_error}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int = 0) -> None:
    """Take every free byte of ``disk`` with a filler file, then give back about ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            block = bytes(chunk)
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def empty(disk: Path) -> None:
    (disk / "filler").unlink(missing_ok=True)


def assert_nothing_partial(replica: Replica) -> None:
    """Every final name verifies; no temp file is left in any level directory."""
    for level in LEVELS:
        directory = Path(replica.level_dir(level))
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            assert not path.name.endswith(".tmp"), f"temp file left behind: {path}"
            if path.name.endswith(".ltx"):
                verify_file(path)


def assert_enospc(error: LtxpoolError, disk: Path) -> None:
    assert error.errno == errno.ENOSPC, error
    assert error.path.startswith(str(disk)) and error.step in WRITE_STEPS, error
    assert "\n" not in str(error) and error.path in str(error) and "ENOSPC" in str(error)


def test_compaction_and_restore_on_a_full_disk_fail_cleanly_and_succeed_once_space_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        stream = SyntheticStream(Replica(disk / "replica"), seed=31, page_size=4096)
        stream.run(40)
        stream.replica.ensure_level_dir(SNAPSHOT_LEVEL)
        steps: Counter[str] = Counter()
        for leave in (0, 4096, 8192):
            fill(disk, leave)
            for level in (1, SNAPSHOT_LEVEL):
                with pytest.raises(LtxpoolError) as caught:
                    compact_level(stream.replica, level)
                assert_enospc(caught.value, disk)
                steps[caught.value.step] += 1
                assert stream.replica.list_level(level).files == []
            with pytest.raises(LtxpoolError) as caught:
                restore(stream.replica, disk / "restored.db", check_integrity=False)
            assert_enospc(caught.value, disk)
            steps[caught.value.step] += 1
            assert not (disk / "restored.db").exists()
            assert_nothing_partial(stream.replica)
            empty(disk)
        fill(disk)
        capsys.readouterr()
        assert cli_main(["compact", stream.replica.root]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "No space left on device [ENOSPC]" in err[0] and str(disk) in err[0], err
        empty(disk)
        settings = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
        assert [result.level for result in compaction_pass(stream.replica, settings, time.time())] == [1, 2, 3, 9]
        assert_nothing_partial(stream.replica)
        restore(stream.replica, tmp_path / "restored.db", check_integrity=False)
        assert (tmp_path / "restored.db").read_bytes() == stream.images[stream.txid]
    record("full disk: compaction and restore ENOSPC", sum(steps.values()), steps=dict(steps))
    assert sum(steps.values()) == 9


POOL_CONFIG = """
workers = 2
[compaction]
intervals = {{ 1 = 0.1, 2 = 0.3, 3 = 0.6 }}
snapshot_interval = 0.5
poll_interval = 0.02
[retention]
levels = {{ 0 = 0.3, 1 = 0.5, 2 = 0.5, 3 = 0.5 }}
snapshots = 0.8
[janitor]
interval = 0.1
[supervisor]
grace = 5
restart_backoff = 0.1
"""


class App:
    """The application: a WAL database outside the small disk, changed a little at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA page_size=4096")
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body BLOB)")
        self.conn.executemany("INSERT INTO docs(body) VALUES (randomblob(?))", [(900,)] * 60)
        self.rng = random.Random(5)

    def change(self) -> None:
        self.conn.execute("BEGIN")
        for _ in range(3):
            self.conn.execute("UPDATE docs SET body = randomblob(?) WHERE id = ?",
                              (self.rng.randrange(200, 1500), self.rng.randrange(1, 61)))
        self.conn.execute("COMMIT")

    def image(self) -> bytes:
        return self.conn.serialize()


def replicate_step(replicator: Replicator, disk: Path, failures: Counter[str]) -> None:
    try:
        replicator.step()
    except LtxpoolError as exc:
        assert_enospc(exc, disk)
        failures[exc.step] += 1


def test_replicate_and_the_pool_on_a_disk_that_fills_resume_when_space_returns(tmp_path: Path) -> None:
    app = App(tmp_path / "app.db")
    config = tmp_path / "pool.toml"
    config.write_text(POOL_CONFIG.format())
    log_path = tmp_path / "pool.log"
    replicate_failures: Counter[str] = Counter()
    with small_filesystem(tmp_path / "disk") as disk:
        root = disk / "replica"
        replicator = Replicator(app.path, root)
        replicator.step()
        with open(log_path, "w") as log:
            pool = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "supervise", "--config", str(config),
                                     str(root)], stderr=log)
        try:
            for phase, seconds in (("healthy", 1.0), ("full", 1.5), ("space back", 2.5)):
                if phase == "full":
                    full_since = time.time()
                if phase == "space back":
                    empty(disk)
                    freed_at = time.time()
                    lines_before_space_returned = len(log_path.read_text().splitlines())
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    if phase == "full":
                        fill(disk, leave=random.choice((0, 0, 8192, 65536)))
                    app.change()
                    replicate_step(replicator, disk, replicate_failures)
                    time.sleep(0.01)
        finally:
            pool.send_signal(signal.SIGTERM)
            code = pool.wait(30)
        lines = log_path.read_text().splitlines()
        assert code == 0, "\n".join(lines)
        replicator.close()
        with Replicator(app.path, root) as again:
            again.step()
            latest = again.state.txid
        replica = Replica(root)
        janitor_pass(replica, JanitorSettings(), time.time())
        assert_nothing_partial(replica)
        listings = replica.list_all()
        assert coverage_gaps(listings) == []
        plan = plan_restore(listings)
        assert plan.problems == [] and plan.max_txid == latest
        restore(replica, tmp_path / "restored.db")
    assert (tmp_path / "restored.db").read_bytes() == app.image()
    failed = [line for line in lines if "compaction failed" in line or "janitor round failed" in line]
    assert failed and all("No space left on device [ENOSPC]" in line for line in failed), "\n".join(lines)
    by_worker: dict[str, list[float]] = {}
    for line in lines[:lines_before_space_returned]:
        if (m := re.search(r" (worker-\d+)\[.*compaction failed: .*retry in ([\d.]+) s", line)):
            by_worker.setdefault(m.group(1), []).append(float(m.group(2)))
    assert all(delays == sorted(delays) for delays in by_worker.values()), f"retries did not back off: {by_worker}"
    resumed = [line for line in lines[lines_before_space_returned:] if "compacted" in line]
    assert resumed, "compaction did not resume after space returned:\n" + "\n".join(lines)
    assert not [line for line in lines if "crashed" in line or "Traceback" in line], "\n".join(lines)
    assert sum(replicate_failures.values()) > 0
    record("full disk: replicate ENOSPC", sum(replicate_failures.values()), steps=dict(replicate_failures))
    record("full disk: pool ENOSPC (compaction/janitor)", len(failed), full_for=round(freed_at - full_since, 2))
