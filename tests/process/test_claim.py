"""The compaction claim: one worker per (replica, level), never a stale claim."""

from __future__ import annotations

from pathlib import Path

from ltxpool.locks.claim import CLAIM_NAME, Claim
from tests.support.helpers import hold_claim


def test_a_second_worker_is_refused_at_once_while_the_first_holds_the_claim(tmp_path: Path, child) -> None:
    holder = child(hold_claim, str(tmp_path))
    holder.wait_ready()
    with Claim(tmp_path) as claim:
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
