"""The ``ltxpool`` console script: one module per command, dispatched here.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Every ltxpool error reaching this level becomes one line on
stderr naming the file and the cause, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence
from types import ModuleType

from ltxpool.display import one_line
from ltxpool.errors import LtxpoolError

__all__ = ["main", "build_parser"]


def _commands() -> list[ModuleType]:
    from ltxpool.cli import (
        compact,
        demo,
        dump,
        janitor,
        replicate,
        restore,
        status,
        stress,
        supervise,
        verify,
    )

    return [demo, stress, verify, dump, restore, compact, janitor, supervise, status, replicate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltxpool",
        description="Keep SQLite/LTX replica directories healthy: a lock-coordinated pool "
        "of compaction workers and a janitor.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard limit.

    A merge keeps every input open; a replica that was never compacted can hold a
    restore chain of thousands of level-0 files, more than the common soft limit
    of 1024 descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_open_file_limit()
    try:
        return int(args.run(args))
    except LtxpoolError as exc:
        print(f"ltxpool: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ltxpool: interrupted", file=sys.stderr)
        return 130
