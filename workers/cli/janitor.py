"""``ltxpool janitor``: one janitor round over a replica, by hand."""

from __future__ import annotations

import argparse
import time

from ltxpool.display import one_line
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.roots import check_root

NAME = "janitor"
HELP = "One janitor round: remove orphaned temp files, quarantine corrupt LTX files, apply retention."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replica", help="replica root (holds ltx/<level>/)")


def run(args: argparse.Namespace) -> int:
    check_root(args.replica, owners=None)
    report = janitor_pass(Replica(args.replica), JanitorSettings(), time.time())
    for group in report.skipped:
        print(f"  {group.line()}")
    for problem in report.problems:
        print(f"  {one_line(problem)}")
    print(f"orphans removed: {report.orphans_removed}, quarantined: {report.quarantined}, "
          f"removed by retention: {report.retention_removed}, busy directories skipped: {report.busy_dirs}")
    return 0
