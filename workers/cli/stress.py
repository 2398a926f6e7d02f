"""``ltxpool stress``: the Litestream #670 race test, run on the user's own disk."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from workers.stress import StressConfig, run_stress

NAME = "stress"
HELP = (
    "Run N writers making atomic writes into one directory while a cleaner sweeps *.tmp "
    "(the Litestream #670 race). Exit 0 when no write failed, 1 otherwise."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writers", type=_positive_int, default=10, help="concurrent writers (default 10)")
    parser.add_argument("--ops", type=_positive_int, default=100, help="writes per writer (default 100)")
    parser.add_argument("--size", type=_positive_int, default=1024, help="bytes per write (default 1024)")
    parser.add_argument(
        "--cleaner-interval", type=_non_negative_float, default=0.0001, metavar="SECONDS",
        help="pause between cleaner sweeps (default 0.0001)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--processes", dest="processes", action="store_true", default=True,
                      help="writers are processes (default)")
    mode.add_argument("--threads", dest="processes", action="store_false", help="writers are threads")
    parser.add_argument("--no-lock", action="store_true",
                        help="the cleaner deletes *.tmp without the lock, as in Litestream #670 (expect failures)")
    parser.add_argument("--dir", default=None,
                        help="where to make the scratch directory (default: the current directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    parent = args.dir if args.dir is not None else os.getcwd()
    directory = tempfile.mkdtemp(prefix=".ltxpool-stress-", dir=parent)
    config = StressConfig(
        directory=directory,
        writers=args.writers,
        ops=args.ops,
        size=args.size,
        cleaner_interval=args.cleaner_interval,
        processes=args.processes,
        locked=not args.no_lock,
    )
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = run_stress(config, progress)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        mode = "processes" if config.processes else "threads"
        lock = "no lock" if args.no_lock else "directory lock"
        print(f"{config.writers} writers ({mode}) x {config.ops} writes of {config.size} B, "
              f"cleaner every {config.cleaner_interval * 1e6:.0f} us, {lock}")
        print(f"Total operations:      {report.total}")
        print(f"Successful writes:     {report.succeeded}")
        print(f"Failed writes:         {report.failed}")
        print(f"Race condition errors: {report.race_errors}")
        print(f"Success rate:          {report.success_rate * 100:.2f}%")
        print(f"Throughput:            {report.writes_per_second:.0f} writes/s in {report.elapsed:.2f} s")
        print(f"Cleaner sweeps:        {report.cleaner_sweeps} ({report.cleaner_busy} skipped busy), "
              f"wait p50/p99/max {report.janitor_wait_p50_ms:.2f}/{report.janitor_wait_p99_ms:.2f}/"
              f"{report.janitor_wait_max_ms:.2f} ms")
        for cause, count in sorted(report.errors.items()):
            print(f"  failed at {cause}: {count}")
    return 0 if report.failed == 0 else 1
