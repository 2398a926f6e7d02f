"""What the directory lock costs, measured against the bare atomic write in the same run.

Run alone: ``python -m tests.bench.bench_locks [--quick]``.

1. The real workload: one writer per directory, a janitor sweeping every 10 ms. Bare
   and locked writes alternate op by op (the disk is noisy; alternation makes both
   see the same noise), per size 1 KiB .. 1 MiB: median us/op and the ratio.
   Targets: locked/bare <= 1.05 at 1 KiB, <= 1.02 at 1 MiB; janitor wait p99 <= 20 ms.
2. The seed's stress: 10 writer processes into one directory, janitor every 10 ms,
   locked vs unlocked (unlocked = the #670 cleanup deleting ``*.tmp`` without a lock).
   Targets: 0 failures locked; locked >= 0.5 x unlocked writes/s; writers' wait
   p99 <= 50 ms; the janitor completes at least one sweep per second.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

from ltxpool.locks.dirlock import DirLock
from ltxpool.proving.stress import StressConfig, percentile, run_stress
from ltxpool.replica.atomic import write_atomic
from ltxpool.replica.janitor import sweep_temp_files

FORK = multiprocessing.get_context("fork")
SIZES = [(1024, "1 KiB"), (10 * 1024, "10 KiB"), (100 * 1024, "100 KiB"), (1024 * 1024, "1 MiB")]


def janitor(locked_dir: str, bare_dir: str, interval: float, stop, results) -> None:
    """Sweep the locked directory (with its lock); only list the bare one (its writes take no lock).

    Records the waits of the sweeps that took the lock (those that found a temp file).
    """
    lock = DirLock(locked_dir)
    waits = []
    while not stop.is_set():
        result = sweep_temp_files(locked_dir, lock, timeout=1.0)
        if result.locked or result.busy:
            waits.append(result.waited)
        os.listdir(bare_dir)
        time.sleep(interval)
    lock.close()
    results.put(waits)


def one_writer(size: int, ops: int, base: str) -> tuple[list[float], list[float], list[float], list[float]]:
    locked_dir = tempfile.mkdtemp(dir=base)
    bare_dir = tempfile.mkdtemp(dir=base)
    stop, results = FORK.Event(), FORK.Queue()
    sweeper = FORK.Process(target=janitor, args=(locked_dir, bare_dir, 0.01, stop, results))
    sweeper.start()
    lock = DirLock(locked_dir)
    data = os.urandom(size)
    bare, locked, lock_waits = [], [], []

    def timed(directory: str, name: str, with_lock: DirLock | None) -> float:
        t0 = time.perf_counter()
        write_atomic(os.path.join(directory, name), data, with_lock)
        return time.perf_counter() - t0

    for op in range(ops):
        name = f"{op:016x}-{op:016x}.ltx"
        # The second write of a pair is 1-2% slower whichever it is: alternate the order.
        if op % 2:
            bare.append(timed(bare_dir, name, None))
            locked.append(timed(locked_dir, name, lock))
        else:
            locked.append(timed(locked_dir, name, lock))
            bare.append(timed(bare_dir, name, None))
        lock_waits.append(lock.last_wait)
        if op % 200 == 199:
            for directory in (bare_dir, locked_dir):
                for entry in os.scandir(directory):
                    if entry.name.endswith(".ltx"):
                        os.unlink(entry.path)
    stop.set()
    waits = results.get() or [0.0]
    sweeper.join()
    lock.close()
    return bare, locked, waits, lock_waits


def lock_only_cost(base: str, rounds: int = 20000) -> float:
    directory = tempfile.mkdtemp(dir=base)
    with DirLock(directory) as lock:
        t0 = time.perf_counter()
        for _ in range(rounds):
            with lock.writing():
                pass
        return (time.perf_counter() - t0) / rounds


def real_workload(base: str, quick: bool) -> None:
    print("== 1. real workload: one writer per directory, janitor sweeping every 10 ms")
    print(f"   lock acquire+release alone: {lock_only_cost(base) * 1e6:.1f} us")
    print(f"   {'size':>8} {'bare us/op':>11} {'locked us/op':>13} {'ratio':>6} {'target':>7} "
          f"{'janitor wait p50/p99/max ms':>28}")
    for size, label in SIZES:
        ops = {1024: 3000, 10240: 3000, 102400: 1500, 1048576: 400}[size] // (5 if quick else 1)
        bare, locked, waits, lock_waits = one_writer(size, ops, base)
        b, lk = statistics.median(bare), statistics.median(locked)
        target = 1.05 if size == 1024 else 1.02 if size == 1048576 else None
        verdict = "" if target is None else ("ok" if lk / b <= target else "MISSED") + f" <={target}"
        print(f"   {label:>8} {b * 1e6:11.0f} {lk * 1e6:13.0f} {lk / b:6.3f} {verdict:>7} "
              f"{percentile(waits, .5) * 1e3:10.2f}/{percentile(waits, .99) * 1e3:.2f}/{max(waits) * 1e3:.2f}"
              f"   writer waited >0.1 ms: {sum(w > 1e-4 for w in lock_waits)}/{ops}, max {max(lock_waits) * 1e3:.2f} ms")


def seed_stress(base: str, quick: bool) -> None:
    print("== 2. seed stress: 10 writer processes x 200 writes of 1 KiB into one directory, janitor every 10 ms")
    rounds = 1 if quick else 3
    runs: dict[bool, list] = {True: [], False: []}
    for _ in range(rounds):
        for locked in (False, True):
            directory = tempfile.mkdtemp(dir=base)
            runs[locked].append(run_stress(StressConfig(directory, 10, 200, 1024, 0.01, True, locked)))
    for locked in (False, True):
        reports = runs[locked]
        rate = statistics.median(r.writes_per_second for r in reports)
        sweeps = statistics.median(r.cleaner_sweeps / r.elapsed for r in reports)
        print(f"   {'locked  ' if locked else 'unlocked'}: {rate:7.0f} writes/s, failed "
              f"{[r.failed for r in reports]} of {reports[0].total}, janitor sweeps/s {sweeps:.0f}", end="")
        if locked:
            print(f", janitor wait p50/p99/max {statistics.median(r.janitor_wait_p50_ms for r in reports):.2f}/"
                  f"{statistics.median(r.janitor_wait_p99_ms for r in reports):.2f}/"
                  f"{max(r.janitor_wait_max_ms for r in reports):.2f} ms, writers' wait p99 "
                  f"{statistics.median(r.writer_wait_p99_ms for r in reports):.2f} ms")
        else:
            print()
    ratio = statistics.median(r.writes_per_second for r in runs[True]) / statistics.median(
        r.writes_per_second for r in runs[False])
    print(f"   locked/unlocked throughput: {ratio:.2f} (target >= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations (a smoke run)")
    parser.add_argument("--dir", default=None, help="where to write (default: system temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ltxpool-bench-", dir=args.dir) as base:
        real_workload(base, args.quick)
        seed_stress(base, args.quick)


if __name__ == "__main__":
    main()
