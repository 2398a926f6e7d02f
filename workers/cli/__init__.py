"""The ``ltxpool`` console script: one module per command, dispatched here.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Every ltxpool error reaching this level becomes one line on
stderr naming the file and the cause, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from workers.errors import LtxpoolError

__all__ = ["main", "build_parser"]


def _commands() -> list[ModuleType]:
    from workers.cli import stress

    return [stress]


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except LtxpoolError as exc:
        print(f"ltxpool: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ltxpool: interrupted", file=sys.stderr)
        return 130
