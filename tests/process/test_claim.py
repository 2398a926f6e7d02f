"""The compaction claim: one worker per (replica, level), never a stale claim, never a silent stranger."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ltxpool.locks.claim import CLAIM_NAME, Claim
from ltxpool.locks.errors import ClaimHeld
from tests.support.helpers import hold_claim


def test_a_second_worker_is_refused_at_once_while_the_first_holds_the_claim(tmp_path: Path, child) -> None:
    holder = child(hold_claim, str(tmp_path))
    holder.wait_ready()
    # The holder is our child: to this claim, a worker of the same pool (pool = our pid).
    with Claim(tmp_path, pool=os.getpid()) as claim:
        with claim.held() as mine:
            assert not mine
        holder.finish()
        with claim.held() as mine:
            assert mine


def test_a_killed_worker_leaves_no_stale_claim(tmp_path: Path, child) -> None:
    holder = child(hold_claim, str(tmp_path))
    holder.wait_ready()
    holder.kill()
    with Claim(tmp_path) as claim, claim.held() as mine:
        assert mine
    assert (tmp_path / CLAIM_NAME).exists()


def test_claims_on_different_levels_do_not_conflict(tmp_path: Path, child) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    holder = child(hold_claim, str(tmp_path / "1"))
    holder.wait_ready()
    with Claim(tmp_path / "2") as claim, claim.held() as mine:
        assert mine
    holder.finish()


def test_a_claim_held_by_a_process_outside_the_pool_is_an_error_naming_it_not_taken(tmp_path: Path) -> None:
    """flock(1) is a process of our own user but no worker of any pool: it is named.

    Control, same run, same holder: declared a worker of the pool (its parent is the
    pool), the claim is ordinarily "taken", which is what a stranger used to look like.
    """
    (tmp_path / CLAIM_NAME).touch(mode=0o600)
    stranger = subprocess.Popen(["flock", "--close", str(tmp_path / CLAIM_NAME), "sleep", "60"], start_new_session=True)
    try:
        with Claim(tmp_path, pool=1) as claim:
            for _ in range(200):
                if claim.holders():
                    break
                time.sleep(0.01)
            with pytest.raises(ClaimHeld) as caught, claim.held():
                pytest.fail("a stranger's claim is not ours")
        error = caught.value
        assert [(h.pid, h.user, h.command) for h in error.holders] == [(stranger.pid, "root", "flock")]
        assert str(error) == (f"{tmp_path / CLAIM_NAME}: claim: claimed by a process that is not a worker of "
                              f"this pool; held by pid {stranger.pid} (user root, uid 0, command flock, WRITE)")
        assert pickle.loads(pickle.dumps(error)).holders == error.holders
        with Claim(tmp_path, pool=os.getpid()) as claim, claim.held() as mine:
            assert mine is False  # control: the stranger's parent is us, so it counts as our worker
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)  # flock and its sleep: their own session
        stranger.wait()
