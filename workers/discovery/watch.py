"""Change notification for the ``[[databases]]`` entries: which databases appeared, went, or changed.

    kernel (inotify, one watch per folder) --events--> DatabaseWatch.read() --Changes--> worker
    scan (one listing per folder) ---------full look--> DatabaseWatch.start() / rescan()

A worker owns one :class:`DatabaseWatch`, sleeps in ``select`` on :meth:`fileno`,
and on waking calls :meth:`read`: :class:`Changes` says which databases to start
or stop replicating and which to step now. Nothing is listed or read while nothing
changes, so the idle cost does not grow with the number of databases; what an event
costs is an ``fnmatch`` of its name, and for a database not yet known, one header
read. :meth:`rescan` is the safety net (every few minutes, and at once after the
kernel's queue overflowed): a full scan diffed against what is known.

Rules, on top of :mod:`ltxpool.discovery.scan`'s (the same header check, no links,
side files never databases):

* each folder is watched before it is listed, so a database created in between is
  seen by the listing or by an event, never by neither; a folder created later is
  watched at once and listed (it may hold files made before its watch existed);
* a file that matches but is no database yet (empty: an app between creating and
  writing it) is checked again on its next event, and added once it has the header;
* a known database is removed only when ``lstat`` confirms it is gone (or no longer
  a regular file at its real path): a copy that truncates and rewrites it, or a
  rename over it (a deploy), makes it ``changed``, never removed and never lost;
* a folder that cannot be watched (EACCES, gone, ENOSPC after start, or past the
  watcher's ``budget``) is logged once and polled instead: every ``POLL_INTERVAL``
  seconds at most ``POLL_FOLDERS`` such folders (in turn) are listed and their
  databases' files stat'ed, so a database there is still found, and a write still
  seen, within seconds, at a cost that is bounded whoever makes the folders;
* ``budget``: ``fs.inotify.max_user_watches`` is one number for every process of the
  pool's user (root: all of root's services). A tenant who makes folders by the
  thousand would spend it all, and a systemd path unit or another tenant's new folder
  would get none; so a watcher holds at most its budget (the pool gives its workers
  three quarters of the limit together) and polls the rest.

Why inotify_simple: a ctypes wrapper (one file, no thread, no C extension) that gives
what a worker needs, a file descriptor to ``select`` on beside its wake-up pipe.
Measured by ``tests/bench/bench_inotify_libs.py`` (one full run of 10,000 folders,
10 s idle, plus one --quick run of 1,000; the numbers are for that machine, the
benchmark is the reference): watching 10,000 folders took 0.07 s and 0.2 MiB with
inotify_simple, 4.8x the time and ~20x the RSS with asyncinotify, 10x and ~30x with
watchdog, which also starts 3 threads; idle CPU was 0 for both fd-based libraries,
but watchdog (IN_OPEN in its mask: listing its own folders floods the 16,384-event
queue) overflowed and re-reconciled without end, burning 9.3 s of CPU in 10 idle s
and delivering no create event within 5 s; create-to-event latency 0.16 ms median
(inotify_simple) vs 0.40 ms (asyncinotify). At 1,000 folders watchdog did not
overflow: 0.6 ms vs 0.4 ms.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from inotify_simple import INotify, flags

from ltxpool.discovery.entries import SIDE_FILE_SUFFIXES, DatabaseDir, DatabaseEntry, DatabaseFile, Target
from ltxpool.discovery.limits import instance_limit_error, needed_watches, read_limit, watch_limit_error
from ltxpool.discovery.scan import claim, covers, holds_database, matches, scan_entries, walk
from ltxpool.display import escape

__all__ = ["Changes", "DatabaseWatch", "WATCH_MASK"]

log = logging.getLogger("ltxpool.discovery")

WATCH_MASK = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.MODIFY | flags.CLOSE_WRITE
              | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)
#: Events that say a database's content may be new: a write of its file, or a new file in
#: its place. Only a write counts for ``-wal`` and ``-journal``: a reader's connection
#: (the pool's own step) creates, closes and deletes them, and were that a change, every
#: step would cause the next, for every database, for ever. A close after writing is
#: no news either: the write itself was reported.
_CONTENT = flags.CREATE | flags.MODIFY | flags.MOVED_TO
_SIDE_CONTENT = flags.MODIFY
#: Events after which a known database may be gone.
_GONE = flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.CREATE
#: Reads per call: a flood is handled in bounded steps; what is left keeps the fd readable.
_MAX_READS = 64
#: Unwatched folders are polled this often, at most this many per poll (in turn).
POLL_INTERVAL = 2.0
POLL_FOLDERS = 500
#: Side files whose change is a change of the database (``-shm`` is only readers' bookkeeping).
_CHANGE_SUFFIXES = ("-wal", "-journal")


@dataclass(frozen=True)
class Changes:
    """What changed since the last look: databases to start replicating, to stop, to step now.

    ``changed`` holds known databases whose file, ``-wal`` or ``-journal`` was written,
    created, closed after writing or moved in; an ``added`` one is never in it too.
    """

    added: tuple[Target, ...] = ()
    removed: tuple[str, ...] = ()
    changed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class _Batch:
    """Paths to look at once the events in hand are all read (one check per path, not per event)."""

    candidates: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    doubtful: set[str] = field(default_factory=set)
    overflow: bool = False


class DatabaseWatch:
    """The databases ``entries`` match, kept up to date by inotify; ``owns`` picks which are reported."""

    def __init__(self, entries: Sequence[DatabaseEntry], *, owns: Callable[[str], bool] = lambda path: True,
                 budget: int | None = None) -> None:
        self._entries = tuple(entries)
        self._owns = owns
        self._budget = budget
        #: When the unwatched folders are next polled, which come next, and what their files looked like.
        self._next_poll = 0.0
        self._poll_turn = 0
        self._looks: dict[str, tuple[tuple[int, int, int] | None, ...]] = {}
        self._inotify: INotify | None = None
        self._folder_of: dict[int, str] = {}
        self._wd_of: dict[str, int] = {}
        #: Folders listed but not watched: each rescan tries again and reports their databases changed.
        self._unwatched: set[str] = set()
        self._known: dict[str, Target] = {}
        self._logged: set[tuple[str, int | None]] = set()
        self._starting = False

    # -- life ------------------------------------------------------------------------------

    def start(self) -> dict[str, Target]:
        """Watch every folder, then list it; return the databases found (this watcher's own)."""
        if self._inotify is None:
            try:
                self._inotify = INotify(nonblocking=True)
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise instance_limit_error("/proc/sys/fs/inotify/max_user_instances", 1,
                                               read_limit("max_user_instances")) from exc
                raise
        self._starting = True
        try:
            found = scan_entries(self._entries, on_folder=self._watch, keep=self._owns)
        finally:
            self._starting = False
        self._known = dict(sorted(found.items()))
        return dict(self._known)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._folder_of.clear()
        self._wd_of.clear()

    def __enter__(self) -> DatabaseWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def fileno(self) -> int:
        """Readable when events are pending: ``select`` on it, then :meth:`read`."""
        return int(self._require().fileno())

    @property
    def known(self) -> dict[str, Target]:
        """The databases this watcher reports now, by path (a copy)."""
        return dict(self._known)

    @property
    def watches(self) -> int:
        """Watch descriptors held (one per watched folder)."""
        return len(self._folder_of)

    # -- looking ---------------------------------------------------------------------------

    def read(self) -> Changes:
        """Every pending event, turned into changes; never blocks (no events: empty Changes).

        Also polls the unwatched folders when their turn has come (see :meth:`wake_at`)."""
        batch = self._drain()
        if batch.overflow:
            log.warning("inotify queue overflowed (fs.inotify.max_queued_events): rescanning")
            return self._resync(batch, everything_changed=True)
        if self._unwatched and time.monotonic() >= self._next_poll:
            self._poll_unwatched(batch)
        return self._settle(batch)

    def wake_at(self) -> float:
        """When :meth:`read` next has polling to do, in ``time.monotonic()`` seconds (inf: none)."""
        return self._next_poll if self._unwatched else math.inf

    @property
    def unwatched(self) -> int:
        """Folders polled because they could not be watched (or are past the budget)."""
        return len(self._unwatched)

    def _poll_unwatched(self, batch: _Batch) -> None:
        """List the next ``POLL_FOLDERS`` unwatched folders; a new name or a changed file is a candidate."""
        self._next_poll = time.monotonic() + POLL_INTERVAL
        folders = sorted(self._unwatched)
        start = self._poll_turn % len(folders)
        turn = (folders[start:] + folders[:start])[:POLL_FOLDERS]
        self._poll_turn = start + len(turn)
        in_turn = set(turn)
        for folder in turn:
            for entry in self._entries:
                if isinstance(entry, DatabaseDir) and covers(entry, folder):
                    for _listed, names in walk(folder, False, functools.partial(matches, entry)):
                        batch.candidates.update(os.path.join(folder, name) for name in names)
        for path in [path for path in self._looks if path not in self._known]:
            del self._looks[path]
        for path in self._known:
            if os.path.dirname(path) in in_turn:
                look = tuple(_signature(path + suffix) for suffix in ("", "-wal", "-journal"))
                # No look yet: what happened before it is unknown, so it counts as a change (one
                # step more, never a write missed between the database's discovery and this look).
                if self._looks.get(path) != look:
                    batch.candidates.add(path)
                    batch.touched.add(path)
                self._looks[path] = look

    def rescan(self) -> Changes:
        """A full scan diffed against what is known (pending events included); watches folders
        that appeared or could not be watched before."""
        batch = self._drain()
        return self._resync(batch, everything_changed=batch.overflow)

    # -- events ----------------------------------------------------------------------------

    def _drain(self) -> _Batch:
        inotify = self._require()
        batch = _Batch()
        for _ in range(_MAX_READS):
            events = inotify.read(timeout=0)
            if not events:
                break
            for event in events:
                self._event(event.wd, event.mask, event.name, batch)
        return batch

    def _event(self, wd: int, mask: int, name: str, batch: _Batch) -> None:
        if mask & flags.Q_OVERFLOW:
            batch.overflow = True
            return
        folder = self._folder_of.get(wd)
        if folder is None:
            return  # a watch already dropped (its IN_IGNORED, or events queued before rm_watch)
        if mask & flags.IGNORED:
            self._drop_wd(wd, batch)
            return
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            # Moved: the watch follows the folder elsewhere, so it goes, with the sub-folders'.
            if self._wd_of.get(folder) == wd:
                self._drop_tree(folder, batch)
            else:
                self._drop_wd(wd, batch)
            return
        if not name:
            return
        path = os.path.join(folder, name)
        if mask & flags.ISDIR:
            if mask & (flags.CREATE | flags.MOVED_TO):
                self._add_tree(folder, path, batch)
            elif mask & (flags.DELETE | flags.MOVED_FROM):
                self._drop_tree(path, batch)
            return
        database, side = path, ""
        for suffix in SIDE_FILE_SUFFIXES:
            if name.endswith(suffix):
                database, side = path[: -len(suffix)], suffix
                break
        if side and side not in _CHANGE_SUFFIXES:
            return
        if database not in self._known and claim(self._entries, database) is None:
            return  # not a name any entry asks for: costs nothing more
        batch.candidates.add(database)
        if mask & (_SIDE_CONTENT if side else _CONTENT):
            batch.touched.add(database)
        if not side and mask & _GONE:
            batch.doubtful.add(database)

    def _settle(self, batch: _Batch, found: dict[str, Target] | None = None) -> Changes:
        added: list[Target] = []
        removed: list[str] = []
        changed: set[str] = set()
        for path in sorted(batch.candidates):
            if path in self._known:
                if path in batch.doubtful and not self._still_there(path):
                    del self._known[path]
                    removed.append(path)
                elif path in batch.touched:
                    changed.add(path)
                continue
            target = found.get(path) if found is not None else self._new_database(path)
            if target is not None:
                self._known[path] = target
                added.append(target)
        return Changes(tuple(added), tuple(removed), frozenset(changed))

    def _new_database(self, path: str) -> Target | None:
        claimed = claim(self._entries, path)
        if claimed is None or not self._owns(path):
            return None
        entry, target = claimed
        return target if holds_database(entry, path) else None

    def _still_there(self, path: str) -> bool:
        """A known database stays until ``lstat`` shows it gone: an empty header mid-copy is no removal."""
        try:
            found = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(found.st_mode):
            return False
        claimed = claim(self._entries, path)
        return claimed is not None and (isinstance(claimed[0], DatabaseFile) or os.path.realpath(path) == path)

    def _resync(self, batch: _Batch, *, everything_changed: bool) -> Changes:
        found = scan_entries(self._entries, on_folder=self._watch, keep=self._owns)
        batch.candidates.update(path for path in found if path not in self._known)
        gone = [path for path in self._known if path not in found]
        batch.candidates.update(gone)
        batch.doubtful.update(gone)
        if everything_changed:
            batch.candidates.update(self._known)
            batch.touched.update(self._known)
        elif self._unwatched:
            unseen = [path for path in self._known if os.path.dirname(path) in self._unwatched]
            batch.candidates.update(unseen)
            batch.touched.update(unseen)
        # A path an event named but the scan did not find is no database (yet): None.
        return self._settle(batch, {path: found[path] for path in batch.candidates if path in found})

    # -- watches ---------------------------------------------------------------------------

    def _watch(self, folder: str) -> None:
        inotify = self._require()
        if self._budget is not None and folder not in self._wd_of and len(self._folder_of) >= self._budget:
            self._unwatched.add(folder)
            # Once per watcher, not per folder: whoever makes the folders must not flood the log.
            self._log_once("<budget>", None, logging.WARNING,
                           f"this worker's budget of {self._budget} inotify watches is spent (three quarters of "
                           f"fs.inotify.max_user_watches, shared by the workers); {escape(folder)} and any folder "
                           f"after it are polled every {POLL_INTERVAL:g} s instead")
            return
        try:
            wd = inotify.add_watch(folder, WATCH_MASK)
        except OSError as exc:
            self._unwatched.add(folder)
            if exc.errno == errno.ENOSPC:
                if self._starting:
                    raise watch_limit_error(folder, needed_watches(self._entries),
                                            read_limit("max_user_watches")) from exc
                self._log_once("<limit>", exc.errno, logging.WARNING,
                               f"fs.inotify.max_user_watches is reached: {escape(folder)} and any folder after it "
                               f"are polled every {POLL_INTERVAL:g} s instead")
            elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._log_once(folder, exc.errno, logging.DEBUG, "not watched: gone, or a link")
            else:
                self._log_once(folder, exc.errno, logging.WARNING, f"not watched: {exc.strerror}")
            return
        old = self._wd_of.get(folder)
        if old is not None and old != wd:
            # A new folder at this path: the old watch follows the old one wherever it went.
            self._folder_of.pop(old, None)
            self._rm_watch(old)
        holder = self._folder_of.get(wd)
        if holder is not None and holder != folder:
            # The same folder under two paths (a bind mount): events come under the first one.
            self._log_once(folder, None, logging.DEBUG, f"is {escape(holder)} again; watched there")
            self._unwatched.add(folder)
            return
        self._unwatched.discard(folder)
        self._wd_of[folder] = wd
        self._folder_of[wd] = folder

    def _add_tree(self, parent: str, folder: str, batch: _Batch) -> None:
        """A folder created or moved in under ``parent``: watch and list it, and its sub-folders."""
        for entry in self._entries:
            if not (isinstance(entry, DatabaseDir) and entry.recursive
                    and (parent == entry.dir or parent.startswith(entry.dir.rstrip(os.sep) + os.sep))):
                continue
            for listed, names in walk(folder, True, functools.partial(matches, entry), self._watch):
                batch.candidates.update(os.path.join(listed, name) for name in names)

    def _drop_tree(self, folder: str, batch: _Batch) -> None:
        """``folder`` is gone or moved away: its watches (and its sub-folders') go, its databases are doubtful."""
        prefix = folder.rstrip(os.sep) + os.sep
        for path in [path for path in self._wd_of if path == folder or path.startswith(prefix)]:
            wd = self._wd_of.pop(path)
            self._folder_of.pop(wd, None)
            self._rm_watch(wd)
        self._unwatched = {path for path in self._unwatched if not (path == folder or path.startswith(prefix))}
        inside = [path for path in self._known if path.startswith(prefix)]
        batch.candidates.update(inside)
        batch.doubtful.update(inside)

    def _drop_wd(self, wd: int, batch: _Batch) -> None:
        folder = self._folder_of.pop(wd)
        if self._wd_of.get(folder) == wd:
            del self._wd_of[folder]
            inside = [path for path in self._known if os.path.dirname(path) == folder]
            batch.candidates.update(inside)
            batch.doubtful.update(inside)

    def _rm_watch(self, wd: int) -> None:
        # EINVAL: the kernel dropped it already (its folder was deleted).
        with contextlib.suppress(OSError):
            self._require().rm_watch(wd)

    def _require(self) -> INotify:
        if self._inotify is None:
            raise ValueError("DatabaseWatch is not started (or closed)")
        return self._inotify

    def _log_once(self, path: str, code: int | None, level: int, message: str) -> None:
        """One line per (path, errno); a ``<key>`` in angle brackets is a watcher-wide line."""
        if (path, code) not in self._logged:
            self._logged.add((path, code))
            if path.startswith("<"):
                log.log(level, "%s", message)
            else:
                log.log(level, "%s: %s", escape(path), message)


def _signature(path: str) -> tuple[int, int, int] | None:
    """What a poll compares: inode, size and mtime (None: no such file)."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns
