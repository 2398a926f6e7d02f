"""Which replicas the pool looks after right now: the configured ones and those of the databases found.

``replicas`` in the config are looked after whether or not they exist yet. A
``[[databases]]`` entry's replicas come and go with its databases: each round the
janitor (and the sweep at the end of a stop) asks discovery's full scan which
databases there are, and takes the replica of each whose directory exists -- the
pool's workers create it at the first replication step, so one that does not exist
holds nothing to clean. The scan is one ``scandir`` per folder plus a header read per
database; what it costs the janitor beyond that is one ``lstat`` per level directory
of an unchanged replica (``ltxpool.replica.janitor_memory``).
"""

from __future__ import annotations

import os
import stat

from ltxpool.discovery import scan
from ltxpool.pool.config import PoolConfig

__all__ = ["replica_roots"]


def _is_directory(path: str) -> bool:
    """A directory, not a link to one: a replica root swapped for a link is refused when opened anyway."""
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def replica_roots(config: PoolConfig) -> list[str]:
    """``config.replicas``, then the existing replica of every database the entries match now; each once."""
    roots = list(config.replicas)
    seen = set(roots)
    if config.databases:
        for target in sorted(scan(config.databases).values()):
            if target.replica not in seen and _is_directory(target.replica):
                seen.add(target.replica)
                roots.append(target.replica)
    return roots
