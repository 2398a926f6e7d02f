"""Janitor rounds over many idle replicas: the first round against the later ones, memory on and off (#15).

Run alone: ``python -m tests.bench.bench_janitor_rounds [--replicas 1000] [--runs 3]``.

N copies of one replica (six level-0 files and their level-1 compaction), aged past
the racy second, then the real ``janitor_main`` loop in this process for four rounds
(``JanitorRound.seconds`` each) with the memory (``JanitorMemory``) and without it
(the control: every round a full pass, as before). Also N replicas found through a
``[[databases]]`` entry (one SQLite file each), so the per-round discovery scan is
in the figure. Prints each run's round times; the first round also verifies every file.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from ltxpool.discovery import DatabaseDir
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.roles import janitor_main
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.janitor_memory import JanitorMemory
from ltxpool.replica.layout import Replica
from tests.support.helpers import RoundsLink
from tests.support.synthetic import SyntheticStream


def build(base: Path, count: int) -> PoolConfig:
    template = base / "template"
    SyntheticStream(Replica(template), seed=3).run(6)
    compact_level(Replica(template), 1)
    databases, replicas = base / "dbs", base / "ltx"
    databases.mkdir()
    replicas.mkdir()
    with sqlite3.connect(databases / "seed.db") as connection:
        connection.execute("CREATE TABLE t(x)")
    connection.close()
    for index in range(count):
        name = f"t{index:05d}.db"
        shutil.copyfile(databases / "seed.db", databases / name)
        shutil.copytree(template, replicas / name, symlinks=True)
    (databases / "seed.db").unlink()
    time.sleep(1.1)
    return PoolConfig(databases=(DatabaseDir(str(databases), str(replicas)),), janitor_interval=0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-janitor-") as scratch:
        config = build(Path(scratch), args.replicas)
        print(f"{args.replicas} idle replicas found through [[databases]], 4 rounds per run, seconds per round")
        for run in range(args.runs):
            for enabled in (True, False):
                link = RoundsLink(4)
                janitor_main(link, config, {}, memory=JanitorMemory(enabled=enabled))
                rounds = link.round_events
                label = "memory " if enabled else "control"
                times = " ".join(f"{r.seconds:8.4f}" for r in rounds)
                counts = " ".join(f"{r.examined}/{r.unchanged}" for r in rounds)
                print(f"run {run + 1} {label}: {times}   (examined/unchanged dirs: {counts})")


if __name__ == "__main__":
    main()
