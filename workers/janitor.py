"""The janitor's sweep of temp files in one directory.

While the janitor holds the directory's lock in cleaning mode, no writer is between
``create`` and ``rename``: every ltxpool temp file it sees is the orphan of a writer
that crashed, and is deleted. Temp files of other tools (Litestream's ``*.ltx.tmp``)
are not covered by our lock, so they are deleted only when older than
``foreign_age`` seconds — long past any write that could still need them.

Without a lock (``lock=None``, the ``--no-lock`` control of ``ltxpool stress``) the
sweep deletes every ``*.tmp`` at once, exactly as the cleanup in Litestream #670 did.

Nothing is followed: entries are examined with lstat and a symlink is unlinked as a
link, never through it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from locks.dirlock import DirLock
from workers.atomic import is_ltxpool_temp
from workers.errors import LockTimeout, LtxpoolError

__all__ = ["SweepResult", "sweep_temp_files", "DEFAULT_FOREIGN_TEMP_AGE", "DEFAULT_CLEANING_TIMEOUT"]

#: Other tools' temp files younger than this are left alone (seconds).
DEFAULT_FOREIGN_TEMP_AGE = 3600.0
#: How long the janitor waits for writes in flight before skipping a directory (seconds).
DEFAULT_CLEANING_TIMEOUT = 1.0


@dataclass
class SweepResult:
    """What one sweep of one directory did.

    ``locked``: the lock was taken (only when there was something to remove);
    ``busy``: writes in flight outlasted the timeout, skipped until the next round.
    """

    directory: str
    removed: list[str] = field(default_factory=list)
    locked: bool = False
    busy: bool = False
    waited: float = 0.0


def _find_temp_files(directory: str, foreign_age: float) -> list[os.DirEntry[str]]:
    """ltxpool temp files, and other tools' ``*.tmp`` older than ``foreign_age`` seconds."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise LtxpoolError.from_oserror(directory, "list directory", exc) from exc
    found = []
    for entry in entries:
        if not entry.name.endswith(".tmp"):
            continue
        if not is_ltxpool_temp(entry.name):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < foreign_age:
                    continue
            except FileNotFoundError:
                continue
        found.append(entry)
    return found


def _remove(entries: list[os.DirEntry[str]], result: SweepResult) -> None:
    for entry in entries:
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise LtxpoolError.from_oserror(entry.path, "unlink temp file", exc) from exc
        result.removed.append(entry.name)


def sweep_temp_files(
    directory: str | os.PathLike[str],
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
    result = SweepResult(os.fspath(directory))
    if lock is None:
        _remove(_find_temp_files(result.directory, 0.0), result)
        return result
    candidates = _find_temp_files(result.directory, foreign_age)
    if not candidates:
        return result
    try:
        with lock.cleaning(timeout) as waited:
            result.locked = True
            result.waited = waited
            _remove(candidates, result)
    except LockTimeout as exc:
        result.busy = True
        result.waited = exc.waited
    return result
