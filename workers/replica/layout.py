"""Litestream's file-replica layout, and the one place that knows it.

``<root>/ltx/<level>/<min_txid:016x>-<max_txid:016x>.ltx``: level 0 holds one file per
transaction (or small batch), levels 1..3 hold compactions of the level below, level 9
holds snapshots (min TXID 1). ``<root>/quarantine/`` holds files the janitor found
corrupt; ``<root>/.ltxpool-replicate/`` is replicate's state
(``ltxpool.replicate.state``). As in Litestream's file replica client, names that do
not parse are skipped and reported, never fatal; unlike it, nothing here follows a symlink: a symlink where
``ltx/``, a level directory or an LTX file belongs is reported and left alone, so nothing
outside the replica is ever read or written through it.

Listing opens the level directory as a :class:`~ltxpool.replica.directory.Directory`
(reached from the root one component at a time, no links) and every :class:`LtxFile`
carries it: reading, quarantining or deleting a listed file goes relative to the very
directory it was listed from, however long ago and whatever its path leads to now.
An entry with a second hard link is skipped like a symlink (``trusted_file``).

A file need not be local: an :class:`LtxFile` listed from elsewhere (an object in a
bucket, ``ltxpool.remote``) carries its :class:`LtxSource`, and ``open_ltx_file`` /
``read_ltx_header`` go through it, so planning, chain checks, merge and restore take
listings of any source.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from ltxpool.ltx import Decoder, Header, open_ltx, parse_filename, read_header
from ltxpool.replica.access import PRIVATE, FileAccess
from ltxpool.replica.directory import Directory, DirectoryStamp, trusted_file
from ltxpool.replica.errors import DirectoryError, LevelDirectoryError

__all__ = [
    "COMPACTION_LEVELS",
    "SNAPSHOT_LEVEL",
    "LEVELS",
    "STATE_DIR",
    "PROBLEM_NAME",
    "LtxFile",
    "LtxSource",
    "Listing",
    "Replica",
    "QUARANTINE_DIR",
    "open_ltx_file",
    "read_ltx_header",
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
QUARANTINE_DIR = "quarantine"


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


class LtxSource(Protocol):
    """Where files that are not in a local directory are read from (``LtxFile.source``)."""

    def open(self, f: LtxFile, *, verify_index: bool = False) -> AbstractContextManager[Decoder]:
        """A decoder of ``f`` with its header read (as ``open_ltx``)."""
        ...

    def read_header(self, f: LtxFile) -> Header:
        """The validated header of ``f``, reading 100 bytes (as ``read_header``)."""
        ...


@dataclass(frozen=True, order=True)
class LtxFile:
    """One LTX file of a replica, as its name and lstat tell it (contents unread)."""

    level: int
    min_txid: int
    max_txid: int
    path: str = field(compare=False)
    size: int = field(compare=False, default=0)
    mtime: float = field(compare=False, default=0.0)
    #: The open level directory it was listed from; None for files described, not listed.
    directory: Directory | None = field(compare=False, default=None, repr=False)
    #: Permission bits and (uid, gid) as listed: what a file made from it may take.
    mode: int = field(compare=False, default=0o600, repr=False)
    owner: tuple[int, int] | None = field(compare=False, default=None, repr=False)
    #: Where a file that is not local is read from (None: ``path``, relative to ``directory``).
    source: LtxSource | None = field(compare=False, default=None, repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def dir_fd(self) -> int | None:
        """The descriptor of the directory it was listed from, for ``*at`` calls (None: by path)."""
        return None if self.directory is None else self.directory.fd


@contextlib.contextmanager
def open_ltx_file(f: LtxFile, *, verify_index: bool = False) -> Iterator[Decoder]:
    """Open a listed file relative to the directory it was listed from (by path if not
    listed), or through its source."""
    if f.source is not None:
        with f.source.open(f, verify_index=verify_index) as decoder:
            yield decoder
        return
    with open_ltx(f.path, dir_fd=f.dir_fd, verify_index=verify_index) as decoder:
        yield decoder


def read_ltx_header(f: LtxFile) -> Header:
    """The validated header of a listed file (100 bytes read), wherever it is."""
    if f.source is not None:
        return f.source.read_header(f)
    return read_header(f.path, dir_fd=f.dir_fd)


@dataclass
class Listing:
    """The LTX files of one level, sorted by TXID, and the entries that were skipped."""

    level: int
    files: list[LtxFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: The level directory as listed (None: it does not exist or was refused).
    directory: Directory | None = field(default=None, repr=False)
    #: Its stamp, taken just before the listing: a later change of it shows in a later stamp.
    stamp: DirectoryStamp | None = field(default=None, repr=False)


def _make_parents(folder: str) -> None:
    """``mkdir -p folder``, each new folder with its nearest existing ancestor's mode minus write for
    others (and the umask: never a chmod by path, which a swapped folder would redirect)."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        up = os.path.dirname(folder)
        if up == folder:
            break
        folder = up
    mode = stat.S_IMODE(os.stat(folder).st_mode) & ~0o022
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)


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

    def ensure_root(self, access: FileAccess) -> None:
        """Create the root if it is missing, with ``access``'s folder mode and owner.

        Only the root itself is made with that mode. Missing folders above it (a
        ``[[databases]]`` replica under ``replica_root/<tenant>/``) take the mode of the
        nearest folder that exists, never group- or world-writable, so they show no
        more of the tree than the operator's own folder does.
        """
        parent = os.path.dirname(os.path.abspath(self.root))
        try:
            _make_parents(parent)
            os.mkdir(self.root, access.dir_mode)
        except FileExistsError:
            return
        except OSError as exc:
            raise DirectoryError.from_oserror(self.root, "create replica root", exc) from exc
        if access.owner is not None and os.geteuid() == 0:
            with self.open_root() as root:
                try:
                    os.fchown(root.fd, *access.owner)
                except OSError as exc:
                    raise DirectoryError.from_oserror(self.root, "chown replica root", exc) from exc

    def open_root(self) -> Directory:
        """The replica root, opened without following a link in its last component."""
        return Directory.open(self.root)

    def _ltx(self, *, create: bool) -> Directory | None:
        if create:
            self.ensure_root(PRIVATE)
        with self.open_root() as root:
            return root.child("ltx", create=True) if create else root.optional_child("ltx")

    def level_directory(self, level: int, *, create: bool = False, parents: bool = True) -> Directory | None:
        """The open level directory (created, with ``ltx/``, if asked); None if it does not exist.

        ``parents=False`` creates only the level directory itself: a compactor must not
        bring back a replica that was removed while it ran. A root made here is private
        (0700); replicate makes it first, following the database. A symlink anywhere from the
        root down is refused with a :class:`LevelDirectoryError`, never followed.
        """
        try:
            ltx = self._ltx(create=create and parents)
            if ltx is None:
                return None
            with ltx:
                return ltx.child(str(level), create=True) if create else ltx.optional_child(str(level))
        except LevelDirectoryError:
            raise
        except DirectoryError as exc:
            raise LevelDirectoryError(exc.path, exc.step, exc.errno, exc.reason) from exc

    def subdirectory(self, name: str, *, create: bool = False) -> Directory | None:
        """An open directory directly under the root (quarantine, state), never through a link."""
        with self.open_root() as root:
            return root.child(name, create=True) if create else root.optional_child(name)

    def open_state_file(self, name: str) -> int | None:
        """A read-only descriptor of ``.ltxpool-replicate/<name>`` (state, problem), reached
        without a link and never blocking on a FIFO planted under its name; None when the
        folder or the file is missing. Other failures raise (``DirectoryError``, ``OSError``)."""
        try:
            state = self.subdirectory(STATE_DIR)
            if state is None:
                return None
            with state:
                return state.open_file(name, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except DirectoryError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def safe_level_dirs(self) -> Iterator[tuple[int, Directory]]:
        """``(level, directory)`` of each level directory that exists and is reached without a symlink.

        The directories a sweep may enter. Lazy on purpose: each level is opened just
        before the caller enters it, not before the caller's waits on earlier levels.
        A level refused (a symlink) is skipped: :meth:`list_level` reports it.
        """
        for level in LEVELS:
            try:
                directory = self.level_directory(level)
            except LevelDirectoryError:
                continue
            if directory is not None:
                yield level, directory

    def ensure_level_dir(self, level: int) -> str:
        """Create the level directory if needed (refusing a symlink on the way); its path."""
        directory = self.level_directory(level, create=True)
        assert directory is not None
        directory.close()
        return self.level_dir(level)

    def list_level(self, level: int) -> Listing:
        """The level's LTX files by TXID; a missing level directory is an empty level."""
        listing = Listing(level)
        try:
            directory = self.level_directory(level)
        except LevelDirectoryError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                listing.skipped.append((exc.path, f"level directory {exc.reason}; not followed"))
                return listing
            if exc.errno == errno.ENOENT:  # the root itself went away
                return listing
            raise
        if directory is None:
            return listing
        listing.directory = directory
        try:
            listing.stamp = directory.stamp()
            entries = directory.scandir()
        except DirectoryError as exc:
            raise LevelDirectoryError(exc.path, "list level directory", exc.errno, exc.reason) from exc
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(".tmp"):
                continue
            path = directory.display(entry.name)
            txids = parse_name(entry.name)
            if txids is None:
                listing.skipped.append((path, "name is not <min>-<max>.ltx"))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (untrusted := trusted_file(st)) is not None:
                listing.skipped.append((path, untrusted))
                continue
            listing.files.append(LtxFile(level, *txids, path, st.st_size, st.st_mtime, directory,
                                         stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)))
        listing.files.sort()
        return listing

    def list_all(self) -> dict[int, Listing]:
        return {level: self.list_level(level) for level in LEVELS}
