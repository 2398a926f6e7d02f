"""The janitor's memory: which replicas its last round left clean, and how to tell they still are.

A host pool looks after thousands of replicas, nearly all idle (issue 15). A full
janitor pass opens every level directory and builds its lock (17 open files), lists,
verifies and plans retention, whether or not anything changed. So after a pass that
left a replica clean (``JanitorReport.clean``: nothing removed, quarantined, busy,
waited for, skipped or wrong) the memory keeps, per level directory, the stamp taken
just before it was listed (``DirectoryStamp``: device, inode, mtime, ctime; or "no
such directory"), and for the replica the report's ``due``: the first time anything
there becomes work by mere ageing (a foreign temp file, a retention age).

Next round, :meth:`JanitorMemory.unchanged` is one ``lstat`` per level path, never
following a link, and no lock: when every level shows the same stamp and ``due`` has
not come, nothing can have happened there. A new file, a temp file left by a killed
writer, a removal, a rename, a folder swapped for a symlink, ``utime`` setting the
mtime back: each moves the mtime or the ctime, or gives another inode, and the
replica gets the full pass, which works through descriptors as it always did. The
``lstat`` itself opens nothing and acts on nothing, so whatever a swapped path leads
to, skipping touches nothing.

Coarse kernel timestamps: two changes in one clock tick share a stamp. A change that
came after the listing, in the tick of the change just before it, would look like no
change at all. As git does with "racily clean" index entries, a stamp taken within a
second of its directory's last change (``DirectoryStamp.racy``) is not remembered:
that replica gets a full pass next round too, by which time the tick is long past.
(Kernels with multigrain timestamps, Linux 6.13 and later, on ext4, xfs, btrfs and
tmpfs, even give a change right after a stat a distinct timestamp; the rule does not
rely on it.)

What the memory does not see: a file rewritten in place (its directory does not
change). Retention and the temp sweep work only on names, which do change the
directory; verification of a rewritten file waits for the next change there, as it
did before for a rewrite that kept the size and mtime.

The decision is per replica, not per level: retention plans across levels (a change
at one level can free files at another by moving the restore chain), so a change
anywhere in a replica gets the whole replica its pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ltxpool.replica.janitor import JanitorReport
from ltxpool.replica.layout import LEVELS, Replica

__all__ = ["JanitorMemory"]

_Key = tuple[int, int, int, int] | None


@dataclass(frozen=True)
class _Clean:
    """A replica as its last clean pass left it: each level path's stamp key, and when it is due."""

    keys: tuple[tuple[str, _Key], ...]
    due: float


class _Unreadable:
    """What a failed ``lstat`` (other than "no such directory") looks like: equal to nothing."""


_UNREADABLE = _Unreadable()


def _look(path: str) -> _Key | _Unreadable:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError:
        return _UNREADABLE
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


class JanitorMemory:
    """Per replica root, the level directories as its last clean janitor pass left them.

    ``enabled=False`` (tests and benchmarks only: the control) remembers nothing, so
    every replica gets its full pass every round, as before.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._clean: dict[str, _Clean] = {}

    def __len__(self) -> int:
        return len(self._clean)

    def unchanged(self, replica: Replica, now: float) -> int | None:
        """The number of level directories a pass over ``replica`` may skip now, or None if it needs one.

        None when its last pass was not clean (or there was none), when its ``due`` time
        (wall clock, like ``now``) has come, or when any level path's ``lstat`` differs.
        """
        clean = self._clean.get(replica.root)
        if clean is None or now >= clean.due:
            return None
        for path, key in clean.keys:
            if _look(path) != key:
                return None
        return sum(key is not None for _, key in clean.keys)

    def remember(self, replica: Replica, report: JanitorReport) -> bool:
        """Keep what a pass over ``replica`` saw if it proves the next look; otherwise forget it.

        Returns whether it was kept: only a clean pass that stamped every level, no stamp racy.
        """
        stamps = report.stamps
        if (not self.enabled or not report.clean or set(stamps) != set(LEVELS)
                or any(stamp is not None and stamp.racy for stamp in stamps.values())):
            self.forget(replica.root)
            return False
        keys = tuple((replica.level_dir(level), None if (stamp := stamps[level]) is None else stamp.key)
                     for level in LEVELS)
        self._clean[replica.root] = _Clean(keys, report.due)
        return True

    def forget(self, root: str) -> None:
        """The next round gives ``root`` its full pass (it failed, or is no longer looked after)."""
        self._clean.pop(root, None)

    def keep_only(self, roots: Iterable[str]) -> None:
        """Forget every replica not in ``roots`` (dropped from the config or its database gone)."""
        wanted = set(roots)
        for root in [root for root in self._clean if root not in wanted]:
            del self._clean[root]
