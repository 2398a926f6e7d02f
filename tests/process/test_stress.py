"""The Litestream #670 race suite, with its control: the unlocked run must fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ltxpool.proving.stress import StressConfig, final_name, payload_for, run_stress
from tests.support.helpers import run_ltxpool


def test_race_10_writer_processes_x_100_with_cleaner_every_100us_all_succeed_and_the_unlocked_control_fails(
    tmp_path: Path,
) -> None:
    locked_dir, control_dir = tmp_path / "locked", tmp_path / "control"
    locked_dir.mkdir()
    control_dir.mkdir()
    locked = run_stress(StressConfig(str(locked_dir), writers=10, ops=100, cleaner_interval=0.0001))
    control = run_stress(StressConfig(str(control_dir), writers=10, ops=100, cleaner_interval=0.0001, locked=False))
    assert (locked.total, locked.succeeded, locked.failed, locked.race_errors) == (1000, 1000, 0, 0)
    assert locked.cleaner_sweeps > 0
    assert control.race_errors > 0, "the control never hit the race, so the locked run proves nothing"
    assert control.failed == control.race_errors


def test_race_with_writer_threads_all_succeed_and_the_unlocked_control_fails(tmp_path: Path) -> None:
    locked_dir, control_dir = tmp_path / "locked", tmp_path / "control"
    locked_dir.mkdir()
    control_dir.mkdir()
    locked = run_stress(StressConfig(str(locked_dir), writers=10, ops=100, processes=False))
    control = run_stress(StressConfig(str(control_dir), writers=10, ops=100, processes=False, locked=False))
    assert (locked.succeeded, locked.failed) == (1000, 0)
    assert control.race_errors > 0


def test_20_concurrent_writers_x_50_writes_each_file_holds_exactly_its_content(tmp_path: Path) -> None:
    report = run_stress(StressConfig(str(tmp_path), writers=20, ops=50, size=4096, cleaner_interval=0.001))
    assert (report.succeeded, report.failed) == (1000, 0)
    for writer in range(20):
        for op in range(50):
            assert (tmp_path / final_name(writer, op)).read_bytes() == payload_for(writer, op, 4096)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_stress_command_prints_the_json_report_and_exits_0_when_nothing_failed(tmp_path: Path) -> None:
    done = run_ltxpool("stress", "--writers", "4", "--ops", "25", "--json", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"total", "succeeded", "failed", "race_errors", "success_rate"} <= report.keys()
    assert (report["total"], report["succeeded"], report["failed"], report["success_rate"]) == (100, 100, 0, 1.0)
    assert os.listdir(tmp_path) == []


def test_stress_command_without_the_lock_reports_race_errors_and_exits_1(tmp_path: Path) -> None:
    done = run_ltxpool("stress", "--writers", "10", "--ops", "100", "--no-lock", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "Race condition errors:" in done.stdout
    race_line = next(line for line in done.stdout.splitlines() if line.startswith("Race condition errors:"))
    assert int(race_line.split(":")[1]) > 0


def test_stress_command_refuses_bad_arguments_with_one_line(tmp_path: Path) -> None:
    done = run_ltxpool("stress", "--writers", "0", "--dir", str(tmp_path))
    assert done.returncode == 2
    assert "--writers: must be at least 1" in done.stderr
