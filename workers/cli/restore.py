"""``ltxpool restore``: rebuild a database from a replica, verified, into a new file."""

from __future__ import annotations

import argparse
import sys

from ltxpool.cli.argtypes import file_mode
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from ltxpool.replicate.compare import compare_with_source

NAME = "restore"
HELP = "Restore the database at the latest TXID (or --txid) from a replica into a new file, verified."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replica", help="replica root (holds ltx/<level>/)")
    parser.add_argument("output", help="database file to create (must not exist)")
    parser.add_argument("--txid", type=lambda text: int(text, 0), default=None,
                        help="restore to this TXID (decimal, or hex with 0x); default: the latest")
    parser.add_argument("--allow-gap", action="store_true",
                        help="if a gap makes the TXID unreachable, restore the latest TXID below it (and say so) "
                             "instead of failing")
    parser.add_argument("--mode", type=file_mode, default=0o600,
                        help="the restored file's mode, octal (default 0600: only you can read it, whoever could "
                             "read the source)")
    parser.add_argument("--compare", metavar="DB", default=None,
                        help="then check page for page that the result equals the SQLite database DB as it is now "
                             "(the source, when it has not changed since the restored TXID); exit 1 if not")


def run(args: argparse.Namespace) -> int:
    result = restore(Replica(args.replica), args.output, args.txid, allow_gap=args.allow_gap, mode=args.mode)
    if result.gap is not None:
        print(f"ltxpool: warning: restoring TXID {result.txid} instead: {result.gap}", file=sys.stderr)
    if result.verified_by:
        checksum = f"database checksum verified against the {' and the '.join(result.verified_by)}"
    else:
        checksum = "no database checksum recorded for this TXID (not verified)"
    print(f"restored TXID {result.txid} ({result.commit} pages of {result.page_size} B) from {result.files} files "
          f"to {result.output}: LTX checksums ok, {checksum}, integrity_check ok")
    if args.compare is not None:
        pages = compare_with_source(result.output, args.compare)
        print(f"{result.output} equals {args.compare} page for page ({pages} pages)")
    return 0
