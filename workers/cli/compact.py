"""``ltxpool compact``: one compaction pass over a replica, by hand.

Run by hand, it belongs to no pool: a level whose claim someone holds -- a running
pool's worker or a stranger -- is reported with the holder (pid, user, command) and
exits 2, never as "nothing to do" (issue 13). The other levels are still compacted.
"""

from __future__ import annotations

import argparse
import sys

from ltxpool.locks.errors import ClaimHeld, LockTimeout
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
    code = 0
    for level in levels:
        try:
            result = compact_level(replica, level)
        except (ClaimHeld, LockTimeout) as exc:
            print(f"level {level}: not compacted: {exc}", file=sys.stderr)
            code = 2
            continue
        if result is None:
            print(f"level {level}: nothing to do")
        else:
            print(f"level {level}: merged {result.inputs} files, TXID {result.min_txid}-{result.max_txid}, "
                  f"{result.bytes_written} bytes in {result.seconds:.3f} s")
    return code
