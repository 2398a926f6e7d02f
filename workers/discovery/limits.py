"""The kernel's inotify limits, checked against what the ``[[databases]]`` entries need.

Every watcher (one per worker: each watches every folder, whatever its shard) holds
one inotify instance and one watch per folder, charged to the user running it,
against ``fs.inotify.max_user_instances`` and ``fs.inotify.max_user_watches``. When
they run out the kernel says only ENOSPC / EMFILE, halfway through a start; checking
first turns that into a message that names the limit and the value to give it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence

from ltxpool.discovery.entries import DatabaseDir, DatabaseEntry
from ltxpool.discovery.errors import DiscoveryError
from ltxpool.discovery.scan import folders_of

__all__ = ["check_watch_limit", "needed_watches", "watch_limit_error", "instance_limit_error", "read_limit"]

PROC = "/proc"


def read_limit(name: str, proc: str = PROC) -> int | None:
    """``fs.inotify.<name>`` (``max_user_watches``, ``max_user_instances``); None if unreadable."""
    try:
        with open(os.path.join(proc, "sys/fs/inotify", name)) as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return None


def needed_watches(entries: Sequence[DatabaseEntry]) -> int:
    """How many folders a watcher of ``entries`` would watch now (each existing folder once)."""
    return len({folder for entry in entries for folder in folders_of(entry)})


def _in_use(proc: str, uid: int) -> tuple[int, int]:
    """(inotify instances, watches) held now by processes of ``uid``: what is left of the limits."""
    instances = watches = 0
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return 0, 0
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        with contextlib.suppress(OSError):
            if os.stat(os.path.join(proc, pid)).st_uid != uid:
                continue
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:inotify":
                        continue
                    instances += 1
                    with open(os.path.join(proc, pid, "fdinfo", fd)) as info:
                        watches += sum(1 for line in info if line.startswith("inotify wd:"))
    return instances, watches


def _suggest(needed: int, limit: int) -> int:
    """A value that leaves room: twice what is needed, and always above the limit, in KiB steps."""
    wanted = max(2 * needed, limit + needed)
    return -(-wanted // 1024) * 1024


def watch_limit_error(path: str, needed: int, limit: int | None, in_use: int = 0) -> DiscoveryError:
    shown = "unknown" if limit is None else str(limit)
    held = f" and {in_use} are in use already" if in_use else ""
    suggestion = _suggest(needed + in_use, limit or 0)
    return DiscoveryError(path, "watch", errno.ENOSPC,
                          f"{needed} folders to watch, but fs.inotify.max_user_watches is {shown}{held}: "
                          f"raise it (sysctl fs.inotify.max_user_watches={suggestion})")


def instance_limit_error(path: str, needed: int, limit: int | None, in_use: int = 0) -> DiscoveryError:
    shown = "unknown" if limit is None else str(limit)
    return DiscoveryError(path, "watch", errno.EMFILE,
                          f"{needed} inotify instances needed, {in_use} in use, but fs.inotify.max_user_instances "
                          f"is {shown}: raise it (sysctl fs.inotify.max_user_instances={max(2 * (needed + in_use), 128)})")


def check_watch_limit(entries: Sequence[DatabaseEntry], *, watchers: int = 1, proc: str = PROC) -> None:
    """Raise :class:`DiscoveryError` naming the limit to raise if ``watchers`` watchers of ``entries``
    would not fit in what is left of ``fs.inotify.max_user_watches`` / ``max_user_instances``
    for this user (``proc``: where ``/proc`` is, for tests)."""
    instances_in_use, watches_in_use = _in_use(proc, os.geteuid())
    max_instances = read_limit("max_user_instances", proc)
    if max_instances is not None and instances_in_use + watchers > max_instances:
        raise instance_limit_error(os.path.join(proc, "sys/fs/inotify/max_user_instances"), watchers,
                                   max_instances, instances_in_use)
    per_entry = {_top(entry): set(folders_of(entry)) for entry in entries}
    needed = len(set().union(*per_entry.values())) * watchers
    max_watches = read_limit("max_user_watches", proc)
    if max_watches is not None and needed + watches_in_use > max_watches:
        biggest = max(per_entry, key=lambda top: len(per_entry[top]))
        raise watch_limit_error(biggest, needed, max_watches, watches_in_use)


def _top(entry: DatabaseEntry) -> str:
    return entry.dir if isinstance(entry, DatabaseDir) else os.path.dirname(entry.path)
