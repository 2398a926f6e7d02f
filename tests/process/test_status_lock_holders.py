"""A lock held by a process that is not ltxpool is named by status and counted as a metric.

The holder is a real ``flock(1)`` process on a level's lock file; the controls in the
same run: once it exits, nothing is reported; an ltxpool process holding the same lock
is ordinary work, not reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ltxpool.replica.layout import Replica
from ltxpool.replica.status import replica_status, status_metrics
from tests.support.synthetic import SyntheticStream

HOLD = "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n" \
       "print('held', flush=True)\ntime.sleep(60)\n"


def _held_by(argv: list[str]) -> subprocess.Popen[str]:
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert holder.stdout is not None
    return holder


def _stop(holder: subprocess.Popen[str]) -> None:
    """Kill the holder and its children (flock's ``sleep`` inherits the locked descriptor)."""
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()


def _level0(replica: Replica) -> tuple[int, list[str]]:
    level = next(level for level in replica_status(replica, time.time()).levels if level.level == 0)
    return level.foreign_lock_holders, level.problems


def test_a_strangers_lock_is_named_and_counted_and_ltxpools_own_is_not(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=2)
    stream.run(3)
    slot = Path(stream.replica.level_dir(0)) / ".ltxpool.slot-00"
    slot.touch(mode=0o600)
    stranger = _held_by(["flock", "--exclusive", str(slot), "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while _level0(stream.replica)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        count, problems = _level0(stream.replica)
        assert count == 1
        assert any(f"pid {stranger.pid}" in p and "command flock" in p and "not an ltxpool process" in p
                   for p in problems), problems
        metric = next(f for f in status_metrics([replica_status(stream.replica, time.time())])
                      if f.name == "ltxpool_level_foreign_lock_holders")
        assert [s.value for s in metric.samples if s.labels["level"] == "0"] == [1.0]
    finally:
        _stop(stranger)
    assert _level0(stream.replica)[0] == 0, "control: the holder gone, nothing is reported"
    script = tmp_path / "bin" / "ltxpool"  # how the installed console script runs: python .../bin/ltxpool
    script.parent.mkdir()
    script.write_text(HOLD)
    own = _held_by([sys.executable, str(script), str(slot)])
    try:
        assert own.stdout is not None and own.stdout.readline().strip() == "held"
        assert _level0(stream.replica)[0] == 0, "control: an ltxpool process holding the lock is ordinary work"
    finally:
        _stop(own)
