"""``ltxpool compact``: one compaction pass over a replica, by hand."""

from __future__ import annotations

import argparse

from ltxpool.replica.compactor import SCHEDULED_LEVELS, compact_level
from ltxpool.replica.layout import Replica
from ltxpool.replica.roots import check_root

NAME = "compact"
HELP = "Compact a replica now: every level (1, 2, 3, then the level-9 snapshot) or only --level L."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replica", help="replica root (holds ltx/<level>/)")
    parser.add_argument("--level", type=int, choices=SCHEDULED_LEVELS, default=None,
                        help="compact only this level")


def run(args: argparse.Namespace) -> int:
    check_root(args.replica, owners=None)
    replica = Replica(args.replica)
    levels = SCHEDULED_LEVELS if args.level is None else (args.level,)
    for level in levels:
        result = compact_level(replica, level)
        if result is None:
            print(f"level {level}: nothing to do (or claimed by another worker)")
        else:
            print(f"level {level}: merged {result.inputs} files, TXID {result.min_txid}-{result.max_txid}, "
                  f"{result.bytes_written} bytes in {result.seconds:.3f} s")
    return 0
