"""Litestream's file-replica layout, and the one place that knows it.

``<root>/ltx/<level>/<min_txid:016x>-<max_txid:016x>.ltx``: level 0 holds one file per
transaction (or small batch), levels 1..3 hold compactions of the level below, level 9
holds snapshots (min TXID 1). ``<root>/quarantine/`` holds files the janitor found
corrupt; ``<root>/.ltxpool-replicate/`` is replicate's state
(``ltxpool.replicate.state``). As in Litestream's file replica client, names that do
not parse are skipped and reported, never fatal; unlike it, nothing here follows a symlink: a symlink where
``ltx/``, a level directory or an LTX file belongs is reported and left alone, so nothing
outside the replica is ever read or written through it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from ltxpool.ltx import parse_filename
from ltxpool.replica.errors import LevelDirectoryError

__all__ = [
    "COMPACTION_LEVELS",
    "SNAPSHOT_LEVEL",
    "LEVELS",
    "STATE_DIR",
    "PROBLEM_NAME",
    "LtxFile",
    "Listing",
    "Replica",
    "format_name",
    "parse_name",
]

COMPACTION_LEVELS = (1, 2, 3)
SNAPSHOT_LEVEL = 9
LEVELS = (0, *COMPACTION_LEVELS, SNAPSHOT_LEVEL)
#: Replicate's state directory inside a replica (a dotfile: no listing ever sees it).
STATE_DIR = ".ltxpool-replicate"
#: In it, while a continuous replicate cannot step: why, since when, its pid.
PROBLEM_NAME = "problem.json"


def format_name(min_txid: int, max_txid: int) -> str:
    return f"{min_txid:016x}-{max_txid:016x}.ltx"


def parse_name(name: str) -> tuple[int, int] | None:
    """(min TXID, max TXID) of a well-formed LTX file name that names a real range, else None.

    The name format is the codec's (ltx's ``filenameRegex``); a replica also refuses
    TXID 0 and a range that runs backwards.
    """
    txids = parse_filename(name)
    if txids is None or txids[0] < 1 or txids[1] < txids[0]:
        return None
    return txids


def _make_dir(directory: str) -> None:
    """mkdir that is content to find the directory already there (another worker made it)."""
    try:
        os.mkdir(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise


@dataclass(frozen=True, order=True)
class LtxFile:
    """One LTX file of a replica, as its name and lstat tell it (contents unread)."""

    level: int
    min_txid: int
    max_txid: int
    path: str = field(compare=False)
    size: int = field(compare=False, default=0)
    mtime: float = field(compare=False, default=0.0)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class Listing:
    """The LTX files of one level, sorted by TXID, and the entries that were skipped."""

    level: int
    files: list[LtxFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Replica:
    """A replica root directory in Litestream's file layout."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    def __repr__(self) -> str:
        return f"Replica({self.root!r})"

    @property
    def ltx_dir(self) -> str:
        return os.path.join(self.root, "ltx")

    @property
    def quarantine_dir(self) -> str:
        return os.path.join(self.root, "quarantine")

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, STATE_DIR)

    def level_dir(self, level: int) -> str:
        return os.path.join(self.ltx_dir, str(level))

    def path_of(self, level: int, min_txid: int, max_txid: int) -> str:
        return os.path.join(self.level_dir(level), format_name(min_txid, max_txid))

    def symlink_on_path(self, level: int) -> str | None:
        """``ltx/`` or the level directory if it is a symlink (never followed), else None.

        Either one would lead every read, write and delete of the level outside the replica.
        """
        for path in (self.ltx_dir, self.level_dir(level)):
            if os.path.islink(path):
                return path
        return None

    def safe_level_dirs(self) -> Iterator[tuple[int, str]]:
        """``(level, directory)`` of each level directory that exists and is reached without a symlink.

        The directories a sweep may enter. Lazy on purpose: each level is checked just
        before the caller enters it, not before the caller's waits on earlier levels.
        """
        for level in LEVELS:
            directory = self.level_dir(level)
            if os.path.isdir(directory) and not self.symlink_on_path(level):
                yield level, directory

    def ensure_level_dir(self, level: int, *, parents: bool = True) -> str:
        """Create the level directory if needed; refuse one reached through a symlink.

        ``parents=False`` creates only the level directory itself: a compactor must not
        bring back a replica that was removed while it ran.
        """
        directory = self.level_dir(level)
        if self.symlink_on_path(level) is None:
            try:
                if parents:
                    os.makedirs(directory, exist_ok=True)
                else:
                    _make_dir(directory)
            except OSError as exc:
                raise LevelDirectoryError.from_oserror(directory, "create level directory", exc) from exc
        link = self.symlink_on_path(level)
        if link is not None:
            raise LevelDirectoryError(link, "open level directory", None, "is a symlink; refusing to follow it")
        return directory

    def list_level(self, level: int) -> Listing:
        """The level's LTX files by TXID; a missing level directory is an empty level."""
        listing = Listing(level)
        directory = self.level_dir(level)
        try:
            if (link := self.symlink_on_path(level)) is not None:
                listing.skipped.append((link, "level directory is a symlink; not followed"))
                return listing
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return listing
        except OSError as exc:
            raise LevelDirectoryError.from_oserror(directory, "list level directory", exc) from exc
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(".tmp"):
                continue
            txids = parse_name(entry.name)
            if txids is None:
                listing.skipped.append((entry.path, "name is not <min>-<max>.ltx"))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                listing.skipped.append((entry.path, "not a regular file (symlinks are not followed)"))
                continue
            listing.files.append(LtxFile(level, *txids, entry.path, st.st_size, st.st_mtime))
        listing.files.sort()
        return listing

    def list_all(self) -> dict[int, Listing]:
        return {level: self.list_level(level) for level in LEVELS}
