"""Which replicas the pool looks after right now: the configured ones and those of the databases found.

``replicas`` in the config are looked after whether or not they exist yet. A
``[[databases]]`` entry's replicas come and go with its databases: each round the
janitor (and the sweep at the end of a stop) asks discovery's full scan which
databases there are, and takes the replica of each whose directory exists -- the
pool's workers create it at the first replication step, so one that does not exist
holds nothing to clean. No file is read to find them: one ``scandir`` per folder and
one ``lstat`` per matching name (its replica directory) -- a name that matches but is
no database has no replica. Beyond that the janitor pays one ``lstat`` per level
directory of an unchanged replica (``ltxpool.replica.janitor_memory``).
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator

from ltxpool.discovery import DatabaseFile, replica_for
from ltxpool.discovery.scan import matches, walk
from ltxpool.pool.config import PoolConfig

__all__ = ["replica_roots"]


def _is_directory(path: str) -> bool:
    """A directory, not a link to one: a replica root swapped for a link is refused when opened anyway."""
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _candidates(config: PoolConfig) -> Iterator[str]:
    """The replica of every file the entries' names match now, without reading any file:
    a matching file that is no database has no replica directory, and is skipped by that."""
    for entry in config.databases:
        if isinstance(entry, DatabaseFile):
            yield entry.replica
            continue
        for folder, names in walk(entry.dir, entry.recursive, functools.partial(matches, entry)):
            for name in names:
                yield replica_for(entry, os.path.join(folder, name))


def replica_roots(config: PoolConfig) -> list[str]:
    """``config.replicas``, then the existing replica of every database the entries match now; each once."""
    roots = list(config.replicas)
    seen = set(roots)
    for replica in sorted(_candidates(config)):
        if replica not in seen and _is_directory(replica):
            seen.add(replica)
            roots.append(replica)
    return roots
