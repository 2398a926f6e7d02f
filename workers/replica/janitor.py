"""The janitor: orphaned temp files, quarantine of corrupt files, retention.

``janitor_pass`` does one round over one replica; ``sweep_temp_files`` is its first
step for each level directory.

While the janitor holds the directory's lock in cleaning mode, no writer is between
``create`` and ``rename``: every ltxpool temp file it sees is the orphan of a writer
that crashed, and is deleted. Temp files of other tools (Litestream's ``*.ltx.tmp``)
are not covered by our lock, so they are deleted only when older than
``foreign_age`` seconds — long past any write that could still need them.

Without a lock (``lock=None``, the ``--no-lock`` control of ``ltxpool stress``) the
sweep deletes every ``*.tmp`` at once, exactly as the cleanup in Litestream #670 did.

Each report also says what a later round needs to know to leave the replica alone
(``ltxpool.replica.janitor_memory``): the stamp of each level directory taken before
it was listed, whether the round left it clean, and ``due``, the earliest time
something there could become work without any change (a foreign temp file ageing
past ``foreign_age``, a file passing a retention age).

A replica shipped off-host (#16) passes ``shipped``, the files the bucket holds
(``ltxpool.replica.shipped``): retention then removes only files in it. A file the
plan would remove but the bucket lacks stays (``held_for_remote``), and the round is
due again at once -- the record changes without its level directories changing, so
the janitor's memory could not tell when the file may go.

Nothing is followed: entries are examined with lstat and a symlink is unlinked as a
link, never through it. Each level is listed once per round, and the directory
listed is the one swept, locked, quarantined from and pruned, through its open
descriptor: a tenant who swaps a folder of its replica for a symlink while the
janitor waits for a lock only moves its own folder (``ltxpool.replica.directory``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from ltxpool.errors import LtxpoolError
from ltxpool.locks.dirlock import DirLock
from ltxpool.locks.errors import LockTimeout
from ltxpool.ltx import verify_file
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.atomic import is_ltxpool_temp
from ltxpool.replica.directory import Directory, DirectoryStamp, dir_lock
from ltxpool.replica.errors import DirectoryError, JanitorError
from ltxpool.replica.layout import Listing, Replica
from ltxpool.replica.problem_summary import SkippedNames, group_skipped
from ltxpool.replica.quarantine import quarantine
from ltxpool.replica.retention import RetentionPolicy, plan_retention, retention_due
from ltxpool.replica.shipped import Shipped, shipped_key

__all__ = [
    "SweepResult",
    "sweep_temp_files",
    "JanitorSettings",
    "JanitorReport",
    "janitor_pass",
    "DEFAULT_FOREIGN_TEMP_AGE",
    "DEFAULT_CLEANING_TIMEOUT",
]

#: Other tools' temp files younger than this are left alone (seconds).
DEFAULT_FOREIGN_TEMP_AGE = 3600.0
#: How long the janitor waits for writes in flight before skipping a directory (seconds).
DEFAULT_CLEANING_TIMEOUT = 1.0


@dataclass
class SweepResult:
    """What one sweep of one directory did.

    ``locked``: the lock was taken (only when there was something to remove);
    ``busy``: writes in flight outlasted the timeout, skipped until the next round;
    ``foreign_due``: when the youngest-to-age foreign temp file left alone becomes old
    enough to go (wall time; inf: none was left).
    """

    directory: str
    removed: list[str] = field(default_factory=list)
    locked: bool = False
    busy: bool = False
    waited: float = 0.0
    foreign_due: float = math.inf


def _find_temp_files(directory: Directory, foreign_age: float) -> tuple[list[os.DirEntry[str]], float]:
    """ltxpool temp files, and other tools' ``*.tmp`` older than ``foreign_age`` seconds;
    and when the first foreign one left (too young) will be old enough."""
    now = time.time()
    try:
        entries = directory.scandir()
    except DirectoryError as exc:
        raise JanitorError(exc.path, "list directory", exc.errno, exc.reason) from exc
    found = []
    foreign_due = math.inf
    for entry in entries:
        if not entry.name.endswith(".tmp"):
            continue
        if not is_ltxpool_temp(entry.name):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if now - mtime < foreign_age:
                foreign_due = min(foreign_due, mtime + foreign_age)
                continue
        found.append(entry)
    return found, foreign_due


def _remove(directory: Directory, entries: list[os.DirEntry[str]], result: SweepResult) -> None:
    for entry in entries:
        try:
            directory.unlink(entry.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise JanitorError.from_oserror(directory.display(entry.name), "unlink temp file", exc) from exc
        result.removed.append(entry.name)


def sweep_temp_files(
    directory: Directory,
    lock: DirLock | None,
    *,
    foreign_age: float = DEFAULT_FOREIGN_TEMP_AGE,
    timeout: float = DEFAULT_CLEANING_TIMEOUT,
) -> SweepResult:
    """Remove orphaned temp files from ``directory`` under its lock; skip it if busy.

    The listing is taken without the lock, and the lock only when it found something:
    a temp file seen then is, once every writer is excluded, either gone (its write
    finished) or an orphan. Most sweeps find nothing and never make a writer wait.
    """
    result = SweepResult(directory.path)
    if lock is None:
        _remove(directory, _find_temp_files(directory, 0.0)[0], result)
        return result
    candidates, result.foreign_due = _find_temp_files(directory, foreign_age)
    if not candidates:
        return result
    try:
        with lock.cleaning(timeout) as waited:
            result.locked = True
            result.waited = waited
            _remove(directory, candidates, result)
    except LockTimeout as exc:
        result.busy = True
        result.waited = exc.waited
    return result


@dataclass(frozen=True)
class JanitorSettings:
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE
    cleaning_timeout: float = DEFAULT_CLEANING_TIMEOUT


@dataclass
class JanitorReport:
    """What one round over one replica did."""

    replica: str
    orphans_removed: int = 0
    retention_removed: int = 0
    quarantined: int = 0
    busy_dirs: int = 0
    #: Files retention would have removed but the bucket does not hold yet: kept.
    held_for_remote: int = 0
    lock_waits: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Names the listings skipped, per directory and reason: logged summarised (problem_summary).
    skipped: list[SkippedNames] = field(default_factory=list)
    #: Per level, its directory's stamp taken before it was listed (None: no such directory).
    stamps: dict[int, DirectoryStamp | None] = field(default_factory=dict)
    #: The earliest wall time something here becomes work with nothing changed (inf: never).
    due: float = math.inf

    @property
    def examined(self) -> int:
        """Level directories listed (and, if needed, swept, verified, pruned) this round."""
        return sum(stamp is not None for stamp in self.stamps.values())

    @property
    def clean(self) -> bool:
        """Whether the round left nothing behind: no change made, nothing busy, waited for or wrong.

        Only after a clean round does a stamp prove, next time, that there is nothing to do.
        """
        return not (self.orphans_removed or self.retention_removed or self.quarantined or self.busy_dirs
                    or self.lock_waits or self.problems or self.skipped)


def _quarantine_corrupt(replica: Replica, listings: dict[int, Listing], locks: dict[int, DirLock],
                        verified: set[tuple[str, int, float]], report: JanitorReport) -> None:
    """Verify each LTX file not verified before (by path, size, mtime); quarantine the corrupt."""
    for level, listing in listings.items():
        report.skipped.extend(group_skipped(listing.skipped))
        for f in list(listing.files):
            key = (f.path, f.size, f.mtime)
            if key in verified:
                continue
            try:
                verify_file(f.path, dir_fd=f.dir_fd)
            except FileNotFoundError:
                continue
            except CorruptLTXError as exc:
                moved = quarantine(replica, f, str(exc), locks[level])
                # Retention plans from these listings next: a file gone to quarantine
                # must not count as covering anything.
                listing.files.remove(f)
                report.quarantined += 1
                report.problems.append(f"quarantined {f.path} -> {moved}: {exc.reason}")
                continue
            except LtxpoolError as exc:
                report.problems.append(str(exc))
                continue
            verified.add(key)


def _apply_retention(listings: dict[int, Listing], settings: JanitorSettings, now: float,
                     locks: dict[int, DirLock], report: JanitorReport, shipped: set[Shipped] | None) -> None:
    for f in plan_retention(listings, settings.retention, now):
        assert f.directory is not None, "retention removes listed files only"
        # Keeping a file the plan would remove never uncovers another: the plan only
        # removes files covered by files that stay, and this one stays too.
        if shipped is not None and shipped_key(f) not in shipped:
            report.held_for_remote += 1
            continue
        try:
            with locks[f.level].cleaning(settings.cleaning_timeout):
                f.directory.unlink(f.name)
        except FileNotFoundError:
            continue
        except LockTimeout:
            report.busy_dirs += 1
            continue
        except OSError as exc:
            raise JanitorError.from_oserror(f.path, "retention unlink", exc) from exc
        report.retention_removed += 1


def janitor_pass(
    replica: Replica,
    settings: JanitorSettings,
    now: float,
    verified: set[tuple[str, int, float]] | None = None,
    shipped: set[Shipped] | None = None,
) -> JanitorReport:
    """One janitor round over ``replica``: orphans, then quarantine, then retention.

    Each level is listed once; that listing's open directory is the one swept, locked
    and changed. ``verified`` remembers files already verified across rounds (pass
    the same set each round); without it every file is verified every round.
    ``shipped``: for a replica with a remote, the files the bucket holds; retention
    removes no other (None: no remote, retention as usual).
    """
    report = JanitorReport(replica.root)
    verified = set() if verified is None else verified
    listings = replica.list_all()
    locks: dict[int, DirLock] = {}
    try:
        for level, listing in listings.items():
            if listing.directory is None:
                continue
            locks[level] = dir_lock(listing.directory)
            swept = sweep_temp_files(listing.directory, locks[level], foreign_age=settings.foreign_temp_age,
                                     timeout=settings.cleaning_timeout)
            report.orphans_removed += len(swept.removed)
            report.busy_dirs += swept.busy
            report.due = min(report.due, swept.foreign_due)
            if swept.locked or swept.busy:
                report.lock_waits.append(swept.waited)
        _quarantine_corrupt(replica, listings, locks, verified, report)
        _apply_retention(listings, settings, now, locks, report, shipped)
        report.due = min(report.due, retention_due(listings, settings.retention, now))
        if report.held_for_remote:
            report.due = now
        report.stamps = {level: listing.stamp for level, listing in listings.items()}
    finally:
        for lock in locks.values():
            lock.close()
        for listing in listings.values():
            if listing.directory is not None:
                listing.directory.close()
    return report
