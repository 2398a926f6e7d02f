"""Who may read a replica: exactly who may read its source database, never more.

A replica holds every page of the database, so a replica readable by a user the
database was not readable by leaks it all (``nobody`` once restored root's replica of
a 0600 database). Litestream 0.5.17 writes its LTX files with the database's mode;
ltxpool does the same, minus any write bit for group and others (nobody but the pool
writes a replica), and gives the folders the matching search bits (0600 -> 0700,
0640 -> 0750, 0644 -> 0755). Run as root for another user's database, the pool
gives the replica that user's ownership, as the database has it, so the tenant can
restore its own data and no one else can.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

__all__ = ["FileAccess", "PRIVATE"]


@dataclass(frozen=True)
class FileAccess:
    """The mode of a replica's files and the owner (uid, gid) to give them (None: the pool's)."""

    file_mode: int = 0o600
    owner: tuple[int, int] | None = None

    @property
    def dir_mode(self) -> int:
        """The folder mode matching ``file_mode``: search wherever read is allowed."""
        return (self.file_mode | (self.file_mode & 0o444) >> 2) & 0o755

    @classmethod
    def of_database(cls, path: str | os.PathLike[str]) -> FileAccess:
        """The access the database at ``path`` allows; the private default if it cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            return PRIVATE
        return cls(stat.S_IMODE(st.st_mode) & 0o644 | 0o600, (st.st_uid, st.st_gid))


#: Owner only: for whatever has no database to follow (restored files, state, notes).
PRIVATE = FileAccess()
