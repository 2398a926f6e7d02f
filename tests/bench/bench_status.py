"""``ltxpool status --config`` over thousands of databases: seconds for the summary.

Run alone: ``python -m tests.bench.bench_status [--sizes 2000 10000]``.

One small database is replicated (a snapshot and three level-0 files), then its
database and replica are copied N times into one ``[[databases]] dir`` entry. Timed:
the whole command (``status --config``, the summary and top 20; and ``--json``), as
an operator runs it, best of two.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time


def _build(top: str, count: int) -> str:
    dbs, ltx = os.path.join(top, "dbs"), os.path.join(top, "ltx")
    os.makedirs(dbs)
    os.makedirs(ltx)
    seed = os.path.join(top, "seed.db")
    conn = sqlite3.connect(seed, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (x)")
    command = [sys.executable, "-m", "ltxpool.cli", "replicate", seed, os.path.join(top, "seed-replica"), "--once"]
    for step in range(4):
        conn.execute("INSERT INTO t VALUES (?)", (step,))
        subprocess.run(command, check=True, capture_output=True)
    conn.close()
    for index in range(count):
        name = f"db{index:05d}.db"
        shutil.copyfile(seed, os.path.join(dbs, name))
        shutil.copytree(os.path.join(top, "seed-replica"), os.path.join(ltx, name), symlinks=True)
    config = os.path.join(top, "ltxpool.toml")
    with open(config, "w") as f:
        f.write('[[databases]]\ndir = "dbs"\nreplica_root = "ltx"\n')
    return config


def _time(*args: str) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ltxpool.cli", "status", *args], check=False, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000])
    args = parser.parse_args()
    print(f"{'databases':>9} {'summary s':>9} {'json s':>7} {'prometheus s':>12}")
    for count in args.sizes:
        with tempfile.TemporaryDirectory() as top:
            config = _build(top, count)
            print(f"{count:>9} {_time('--config', config):>9.2f} {_time('--config', config, '--json'):>7.2f} "
                  f"{_time('--config', config, '--prometheus'):>12.2f}")


if __name__ == "__main__":
    main()
