"""``ltxpool demo``: the main job runs end to end and its own checks pass."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.helpers import run_ltxpool


def test_demo_replicates_compacts_restores_and_proves_every_check(tmp_path: Path) -> None:
    done = run_ltxpool("demo", "--seconds", "3", "--dir", str(tmp_path / "demo"), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks passed       6/6" in done.stdout
    for check in ("pool stopped cleanly on SIGTERM", "orphaned temp file removed by the janitor",
                  "every LTX file verifies", "restore of the latest TXID", "restore of past TXID"):
        assert f"[ok] {check}" in done.stdout
    assert "FAILED" not in done.stdout
    replica = tmp_path / "demo" / "replica" / "ltx"
    assert all(os.listdir(replica / str(level)) for level in (0, 1, 9))


def test_demo_refuses_a_duration_out_of_range(tmp_path: Path) -> None:
    done = run_ltxpool("demo", "--seconds", "0.5", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "--seconds: must be 2 to 3600 seconds" in done.stderr
