"""Restore and compaction planning over many files, against the planner before #13.

Run alone: ``python -m tests.bench.bench_planning [--quick]``.

A replica holding N single-TXID level-0 files (what a long replicate leaves, or what a
tenant plants): the latest restore plan (the snapshot compaction plans the same way)
and the level-1 compaction plan. The baseline is the old restore planner, kept in
``tests.support.plans.quadratic_chains``: it copied the chain of every TXID it reached.
Each is timed (best of three) and its tracemalloc peak measured in this process, in the
same run; the ratios old/new are printed. Target: the new planner's peak grows linearly
with N (bytes per file stay flat), and is at least 100x below the baseline at 20,000 files.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

from ltxpool.replica.plan import plan_compaction, plan_restore
from tests.support.plans import level_zero_run, quadratic_chains


def _measure(run: Callable[[], object]) -> tuple[float, int]:
    """(best seconds of three, tracemalloc peak bytes of one run)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    try:
        run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k files only")
    args = parser.parse_args()
    sizes = (1_000, 5_000) if args.quick else (1_000, 5_000, 20_000)
    print(f"{'files':>7} {'old s':>8} {'new s':>8} {'time x':>8} {'old MiB':>9} {'new MiB':>9} "
          f"{'mem x':>8} {'new B/file':>10} {'compact s':>9} {'compact MiB':>11}")
    for count in sizes:
        listings = level_zero_run(count)
        old_seconds, old_peak = _measure(partial(quadratic_chains, listings))
        new_seconds, new_peak = _measure(partial(plan_restore, listings))
        compact_seconds, compact_peak = _measure(partial(plan_compaction, listings, 1))
        print(f"{count:>7} {old_seconds:>8.3f} {new_seconds:>8.3f} {old_seconds / new_seconds:>8.1f} "
              f"{old_peak / 2**20:>9.1f} {new_peak / 2**20:>9.2f} {old_peak / new_peak:>8.1f} "
              f"{new_peak / count:>10.0f} {compact_seconds:>9.4f} {compact_peak / 2**20:>11.3f}")


if __name__ == "__main__":
    main()
