"""``ltxpool verify PATH...``: fully verify LTX files or whole replica trees.

A directory is a replica (holding ``ltx/<level>/``), its ``ltx`` directory, or one
level directory; only ``<level>/*.ltx`` is verified there, so a quarantine or temp
folder beside ``ltx/`` is never judged. Symlinks are not followed: a linked
directory is not entered, and a linked ``.ltx`` file is reported as bad (the
codec refuses to open it), since a replica should hold none. One line per bad file
(``path: corrupt at byte N: reason``), then ``verified N files: N ok, N bad``.

A replica (a directory holding ``ltx/``) is also checked as a whole: its latest TXID
(with ``--all``, every TXID a file ends at) must restore -- the chain reaches it,
one page size, every page present (``ltxpool.replica.chain_check``; headers and page
indexes only). Each TXID that does not is one ``BAD`` line, then
``checked N restore chains: N broken``.

An ``s3://bucket/prefix[?endpoint=...]`` path is an off-host copy: every object of
its levels is streamed and verified the same way, then its restore chains checked.

Exit 1 if any file is bad or any chain broken; 2 if a path does not exist; else 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

from ltxpool.display import escape, one_line
from ltxpool.errors import LtxpoolError
from ltxpool.ltx import verify_file
from ltxpool.remote import (
    check_remote_chains,
    is_remote_url,
    make_client,
    parse_remote_url,
    remote_listings,
    verify_remote,
)
from ltxpool.replica.chain_check import check_txid, restorable_txids
from ltxpool.replica.errors import LevelDirectoryError
from ltxpool.replica.layout import Replica

__all__ = ["NAME", "HELP", "add_arguments", "run", "ltx_files"]

NAME = "verify"
HELP = "Verify LTX files or replica directories completely (checksums, index, page order)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="an LTX file, a replica, its ltx/ directory or a level")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print one line per good file")
    parser.add_argument(
        "--all", action="store_true", dest="every_txid",
        help="check that every TXID a replica's files end at restores, not only the latest",
    )


def _verify_remote(url: str, verbose: bool, every_txid: bool) -> tuple[int, int, int, list[str]]:
    """(ok, bad, chains checked, a line per broken chain) of one off-host copy."""
    target = parse_remote_url(url)
    listings = remote_listings(make_client(target), target)
    ok = bad = 0
    for verdict in verify_remote(listings):
        if verdict.error is not None:
            bad += 1
            print(f"BAD {verdict.error}", flush=True)
        else:
            ok += 1
            if verbose:
                print(f"ok  {escape(verdict.path)}", flush=True)
    checked, problems = check_remote_chains(listings, every_txid=every_txid)
    return ok, bad, checked, [f"BAD {escape(p.path)}: {one_line(p.summary)}" for p in problems]


def run(args: argparse.Namespace) -> int:
    remote = [path for path in args.paths if is_remote_url(path)]
    args.paths = [path for path in args.paths if not is_remote_url(path)]
    missing = [path for path in args.paths if not os.path.lexists(path)]
    for path in missing:
        print(f"ltxpool: error: {escape(path)}: no such file or directory", file=sys.stderr)
    if missing:
        return 2
    ok = bad = checked = 0
    broken_chains: list[str] = []
    for url in remote:
        counts = _verify_remote(url, args.verbose, args.every_txid)
        ok, bad, checked = ok + counts[0], bad + counts[1], checked + counts[2]
        broken_chains += counts[3]
    for path in _expand(args.paths):
        try:
            verify_file(path)
        except LtxpoolError as exc:
            bad += 1
            print(f"BAD {exc}", flush=True)
        else:
            ok += 1
            if args.verbose:
                print(f"ok  {escape(path)}", flush=True)
    print(f"verified {ok + bad} files: {ok} ok, {bad} bad")
    for line in broken_chains:
        print(line, flush=True)
    broken = len(broken_chains)
    for path in args.paths:
        if not _real_dir(os.path.join(path, "ltx")):
            continue
        # One listing serves every TXID checked; a replica with no files yet has nothing to break.
        listings = Replica(path).list_all()
        txids: list[int | None] = list(restorable_txids(listings)) if args.every_txid else [None]
        has_files = any(listing.files for listing in listings.values())
        problems = [p for txid in txids if has_files and (p := check_txid(listings, txid)) is not None]
        checked += len(txids)
        broken += len(problems)
        for problem in problems:
            print(f"BAD {escape(problem.path)}: {one_line(problem.summary)}", flush=True)
    if checked:
        print(f"checked {checked} restore chain{'' if checked == 1 else 's'}: {broken} broken")
    return 1 if bad or broken else 0


def _expand(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if _real_dir(path):
            try:
                found = ltx_files(path)
            except OSError as exc:
                raise LevelDirectoryError.from_oserror(exc.filename or path, "list", exc) from exc
            yield from found
        else:
            yield path


def ltx_files(directory: str) -> list[str]:
    """The ``.ltx`` files of a replica, an ``ltx/`` directory or a level directory, by level then name."""
    root = os.path.join(directory, "ltx")
    levels = _level_dirs(root) if _real_dir(root) else _level_dirs(directory) or [(0, directory)]
    files = []
    for _, level_dir in levels:
        with os.scandir(level_dir) as entries:
            files.extend(sorted(entry.path for entry in entries if entry.name.endswith(".ltx")))
    return files


def _level_dirs(directory: str) -> list[tuple[int, str]]:
    with os.scandir(directory) as entries:
        levels = [
            (int(entry.name), entry.path)
            for entry in entries
            if entry.name.isdigit() and entry.is_dir(follow_symlinks=False)
        ]
    return sorted(levels)


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)
