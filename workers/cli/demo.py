"""``ltxpool demo``: the main job on an embedded default, proven at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from ltxpool.cli.argtypes import seconds_between
from ltxpool.proving.demo import run_demo
from ltxpool.replica.layout import LEVELS

NAME = "demo"
HELP = (
    "Run the whole product on a generated SQLite shop database: replicate it while a supervised pool "
    "(2 workers + janitor) compacts, then restore the latest and a past TXID and prove both equal the source. "
    "Exit 1 if any check fails."
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None,
                        help="work in this directory and keep it (default: a temporary directory, removed after)")
    parser.add_argument("--seconds", type=seconds_between(2, 3600), default=10.0, help="how long the workload runs (default 10)")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = args.dir if args.dir is not None else tempfile.mkdtemp(prefix="ltxpool-demo-")
    os.makedirs(workdir, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        report = run_demo(workdir, args.seconds, say)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    counters = report.counters
    say("")
    say("summary")
    say(f"  transactions        {report.transactions} (TXID {report.txid})")
    say("  LTX files by level  " + ", ".join(f"L{level}: {report.files.get(level, 0)}" for level in LEVELS)
        + f" ({report.bytes / 1e6:.1f} MB)")
    say(f"  compactions         {counters.get('ltxpool_compactions_total', 0):.0f} "
        f"({counters.get('ltxpool_compaction_written_bytes_total', 0) / 1e6:.1f} MB written)")
    say(f"  orphans cleaned     {counters.get('ltxpool_janitor_orphans_removed_total', 0):.0f}")
    passed = sum(ok for _, ok, _ in report.checks)
    say(f"  checks passed       {passed}/{len(report.checks)}")
    for name, ok, detail in report.checks:
        say(f"    [{'ok' if ok else 'FAILED'}] {name}: {detail}")
    say(f"  took {time.monotonic() - started:.1f} s")
    if not report.passed:
        print("ltxpool: demo: a check failed (see above)", file=sys.stderr)
    return 0 if report.passed else 1
