"""``ltxpool restore``: rebuild a database from a replica, verified, into a new file.

The replica is a directory, or an off-host copy named as ``litestream restore``
takes it: ``s3://bucket/prefix?endpoint=host:port&region=r&forcePathStyle=true``
(credentials from the environment, the shared credentials file or an instance role).
"""

from __future__ import annotations

import argparse
import sys

from ltxpool.cli.argtypes import file_mode
from ltxpool.remote import is_remote_url, make_client, parse_remote_url, restore_remote
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import RestoreResult, restore
from ltxpool.replicate.compare import compare_with_source

NAME = "restore"
HELP = "Restore the database at the latest TXID (or --txid) from a replica into a new file, verified."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replica", help="replica root (holds ltx/<level>/), or s3://bucket/prefix[?endpoint=...&"
                                        "region=...&forcePathStyle=true]")
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


def _restore(args: argparse.Namespace) -> RestoreResult:
    if is_remote_url(args.replica):
        target = parse_remote_url(args.replica)
        return restore_remote(make_client(target), target, args.output, args.txid, allow_gap=args.allow_gap,
                              mode=args.mode)
    return restore(Replica(args.replica), args.output, args.txid, allow_gap=args.allow_gap, mode=args.mode)


def run(args: argparse.Namespace) -> int:
    result = _restore(args)
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
