"""``ltxpool stress``: the Litestream #670 race test, run on the user's own disk.

``--chaos`` runs the crash-chaos test instead (``ltxpool.proving.chaos``): replicate, four
compaction workers and the janitor on a scratch replica while random processes are
SIGKILLed for ``--seconds``, then an audit of the replica.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from ltxpool.cli import main
from ltxpool.cli.argtypes import positive_int, positive_seconds, seconds
from ltxpool.display import escape, one_line
from ltxpool.proving.chaos import ChaosConfig, ChaosReport, run_chaos
from ltxpool.proving.stress import StressConfig, run_stress

NAME = "stress"
HELP = (
    "Run N writers making atomic writes into one directory while a cleaner sweeps *.tmp "
    "(the Litestream #670 race). Exit 0 when no write failed, 1 otherwise. With --chaos: "
    "SIGKILL random processes of a running pool for --seconds, then audit the replica."
)





def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writers", type=positive_int, default=10, help="concurrent writers (default 10)")
    parser.add_argument("--ops", type=positive_int, default=100, help="writes per writer (default 100)")
    parser.add_argument("--size", type=positive_int, default=1024, help="bytes per write (default 1024)")
    parser.add_argument(
        "--cleaner-interval", type=seconds, default=0.0001, metavar="SECONDS",
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
    parser.add_argument(
        "--chaos", action="store_true",
        help="instead: run replicate, 4 compaction workers and the janitor on a scratch replica, SIGKILL random "
        "processes for --seconds, kill them all, then audit the replica (exit 1 on any finding)",
    )
    parser.add_argument("--seconds", type=positive_seconds, default=30.0,
                        help="with --chaos: how long to kill processes (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="with --chaos: seed of the random kills")


def run(args: argparse.Namespace) -> int:
    if args.chaos:
        return _run_chaos(args)
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


def _run_chaos(args: argparse.Namespace) -> int:
    parent = args.dir if args.dir is not None else os.getcwd()
    directory = tempfile.mkdtemp(prefix=".ltxpool-chaos-", dir=parent)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = run_chaos(ChaosConfig(directory=directory, seconds=args.seconds, seed=args.seed), main, progress)
    if report.ok:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        _print_chaos(report)
    return 0 if report.ok else 1


def _print_chaos(report: ChaosReport) -> None:
    kills = ", ".join(f"{kind} {count}" for kind, count in sorted(report.kills.items()))
    levels = ", ".join(f"level {level}: {count}" for level, count in sorted(report.compactions.items()))
    print(f"Chaos for {report.seconds:.1f} s: {report.total_kills} SIGKILLs ({kills}), "
          f"{report.kills_mid_write} mid-write, {report.unconfirmed_kills} unconfirmed")
    print(f"Replicated to TXID {report.latest_txid}; compactions: {levels or 'none'}")
    print(f"Orphan temp files: {report.orphans_removed_by_janitor} removed by the janitor during the run, "
          f"{report.orphans_at_end} left at the end (removed by the audit's janitor round)")
    if report.ok:
        print("Audit: every final name verifies, no orphan after one janitor round, no lock held, no gap, "
              "restore of the latest TXID equals the database")
        return
    print(f"Audit found {len(report.problems)} problems (scratch directory kept: {escape(report.directory)}):")
    for problem in report.problems:
        print(f"  {one_line(problem)}")
