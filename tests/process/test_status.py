"""``ltxpool status`` on a replica whose contents we know: table, JSON and Prometheus agree with the files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.layout import Replica
from tests.support.helpers import run_ltxpool
from tests.support.synthetic import SyntheticStream

DEAD_PID = 4_194_304 + 12_345  # above the kernel's largest pid_max: no such process


@pytest.fixture
def known(tmp_path: Path) -> tuple[Replica, dict[str, int]]:
    """Level 0: TXIDs 1-5 compacted, 6 and 8 (7 lost), 4 temp files of which 2 orphans;
    level 1: [2-5] (after the snapshot at TXID 1) and an overlapping [3-6]; one quarantined file."""
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=3)
    stream.run(5)
    replica = stream.replica
    assert compact_level(replica, 1) is not None
    stream.run(3)
    os.unlink(replica.path_of(0, 7, 7))
    Path(replica.path_of(1, 3, 6)).write_bytes(b"overlapping")
    level0 = Path(replica.level_dir(0))
    (level0 / temp_name_for("0000000000000009-0000000000000009.ltx").replace(f"-{os.getpid()}-", f"-{DEAD_PID}-")
     ).write_bytes(b"orphan of a dead writer")
    (level0 / temp_name_for("000000000000000a-000000000000000a.ltx")).write_bytes(b"write in flight")
    (level0 / "000000000000000b-000000000000000b.ltx.tmp").write_bytes(b"litestream writing")
    old = level0 / "000000000000000c-000000000000000c.ltx.tmp"
    old.write_bytes(b"litestream crashed")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.makedirs(replica.quarantine_dir)
    Path(replica.quarantine_dir, "0-0000000000000004-0000000000000004.ltx").write_bytes(b"bad")
    Path(replica.quarantine_dir, "0-0000000000000004-0000000000000004.ltx.reason").write_text("corrupt")
    sizes = {f"{level}": sum(f.size for f in replica.list_level(level).files) for level in (0, 1)}
    return replica, sizes


def test_json_status_counts_files_bytes_txids_gaps_overlaps_temps_orphans_quarantine(
    known: tuple[Replica, dict[str, int]],
) -> None:
    replica, sizes = known
    done = run_ltxpool("status", "--json", replica.root, timeout=30)
    assert done.returncode == 0, done.stderr
    (status,) = json.loads(done.stdout)["replicas"]
    assert status["root"] == replica.root
    assert status["quarantined"] == 1
    assert status["lost_ranges"] == [[7, 7]]
    levels = {entry["level"]: entry for entry in status["levels"]}
    assert sorted(levels) == [0, 1, 2, 3, 9]
    zero, one = levels[0], levels[1]
    assert (zero["files"], zero["bytes"], zero["min_txid"], zero["max_txid"]) == (7, sizes["0"], 1, 8)
    assert (zero["gaps"], zero["overlaps"], zero["temp_files"], zero["orphan_temp_files"]) == (1, 0, 4, 2)
    assert zero["problems"] == ["gap after TXID 6 at level 0"]
    assert (one["files"], one["bytes"], one["min_txid"], one["max_txid"]) == (2, sizes["1"], 2, 6)
    assert (one["gaps"], one["overlaps"]) == (0, 1)
    newest = os.lstat(replica.path_of(1, 3, 6)).st_ctime
    assert one["newest_file_time"] == newest
    assert 0 <= one["newest_file_age_seconds"] < 60
    assert levels[2]["files"] == 0 and levels[2]["newest_file_age_seconds"] is None


def test_table_has_one_row_per_level_with_files_and_notes_for_every_problem(
    known: tuple[Replica, dict[str, int]],
) -> None:
    replica, sizes = known
    done = run_ltxpool("status", replica.root, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ladder0 = sizes["0"] - os.path.getsize(replica.path_of(0, 1, 1))
    assert lines[0].split() == ["REPLICA", "LEVEL", "FILES", "BYTES", "MIN_TXID", "MAX_TXID", "GAPS", "OVERLAPS",
                                "TEMP", "ORPHAN_TEMP", "NEWEST_AGE"]
    assert lines[1].split()[:10] == [replica.root, "0", "7", str(sizes["0"]), "1", "8", "1",
                                     "0", "4", "2"]
    assert lines[2].split()[:10] == [replica.root, "1", "2", str(sizes["1"]), "2", "6", "0", "1", "0", "0"]
    assert lines[1].split()[10].endswith("s")
    assert lines[3:] == [
        f"{replica.root}: gap after TXID 6 at level 0",
        f"{replica.root}: overlap at level 1: 0000000000000002-0000000000000005.ltx and "
        "0000000000000003-0000000000000006.ltx",
        f"{replica.root}: 1 quarantined files in {replica.quarantine_dir}",
        f"{replica.root}: TXIDs 7-7 are in no file at any level",
        f"{replica.path_of(0, 6, 6)}: latest TXID does not restore: TXID 8 is not reachable: gap after TXID 6: "
        "TXIDs 7-7 are in no file, between 0/0000000000000006-0000000000000006.ltx and "
        "0/0000000000000008-0000000000000008.ltx",
        f"{replica.root}: since the snapshot at TXID 1 (TXIDs 2-): level 0 {ladder0} bytes, "
        f"compaction {sizes['1']} bytes, write amplification {sizes['1'] / ladder0:.2f}",
    ]


def test_prometheus_status_gauges_match_the_files(known: tuple[Replica, dict[str, int]]) -> None:
    replica, sizes = known
    done = run_ltxpool("status", "--prometheus", replica.root, timeout=30)
    assert done.returncode == 0, done.stderr
    samples = {(s.name, s.labels.get("level")): s.value
               for family in text_string_to_metric_families(done.stdout) for s in family.samples
               if s.labels["replica"] == replica.root}
    assert samples[("ltxpool_level_files", "0")] == 7
    assert samples[("ltxpool_level_bytes", "0")] == sizes["0"]
    assert samples[("ltxpool_level_min_txid", "0")] == 1
    assert samples[("ltxpool_level_max_txid", "1")] == 6
    assert samples[("ltxpool_level_gaps", "0")] == 1
    assert samples[("ltxpool_level_overlaps", "1")] == 1
    assert samples[("ltxpool_level_temp_files", "0")] == 4
    assert samples[("ltxpool_level_orphan_temp_files", "0")] == 2
    assert samples[("ltxpool_level_newest_file_timestamp_seconds", "1")] == pytest.approx(
        os.lstat(replica.path_of(1, 3, 6)).st_ctime)
    assert samples[("ltxpool_level_files", "9")] == 0
    assert ("ltxpool_level_max_txid", "9") not in samples
    assert samples[("ltxpool_replica_quarantined_files", None)] == 1
    assert samples[("ltxpool_replica_lost_ranges", None)] == 1
    assert samples[("ltxpool_replica_readable", None)] == 1


def test_status_of_a_missing_replica_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    done = run_ltxpool("status", str(tmp_path / "nowhere"), timeout=30)
    assert done.returncode == 1
    assert done.stderr == f"ltxpool: error: {tmp_path / 'nowhere'}: status: No such file or directory [ENOENT]\n"
