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

``remote_replicas``: the same replicas, those whose entry has a ``[databases.remote]``,
each with its own prefix (``ltxpool.discovery.remote_for``): what the shipper ships and
what the janitor's retention must not delete before the bucket holds it. The janitor
needs both each round: ``looked_after`` gives both from one walk of the folders.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator

from ltxpool.discovery import DatabaseFile, remote_for, replica_for
from ltxpool.discovery.scan import matches, walk
from ltxpool.pool.config import PoolConfig
from ltxpool.remote import RemoteTarget

__all__ = ["looked_after", "replica_roots", "remote_replicas"]


def _is_directory(path: str) -> bool:
    """A directory, not a link to one: a replica root swapped for a link is refused when opened anyway."""
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _candidates(config: PoolConfig, *, remote_only: bool = False) -> Iterator[tuple[str, RemoteTarget | None]]:
    """The replica (and remote) of every file the entries' names match now, without reading any
    file: a matching file that is no database has no replica directory, and is skipped by that."""
    for entry in config.databases:
        if remote_only and entry.remote is None:
            continue
        if isinstance(entry, DatabaseFile):
            yield entry.replica, entry.remote
            continue
        for folder, names in walk(entry.dir, entry.recursive, functools.partial(matches, entry)):
            for name in names:
                path = os.path.join(folder, name)
                yield replica_for(entry, path), remote_for(entry, path)


def _existing(config: PoolConfig, *, remote_only: bool) -> tuple[list[str], dict[str, RemoteTarget]]:
    """One walk: the replicas that exist (``config.replicas`` first), and those of them with a remote."""
    roots = [] if remote_only else list(config.replicas)
    seen = set(roots)
    remotes: dict[str, RemoteTarget] = {}
    for replica, remote in sorted(_candidates(config, remote_only=remote_only), key=lambda item: item[0]):
        wanted = replica not in seen or (remote is not None and replica not in remotes)
        if not wanted or not _is_directory(replica):
            continue
        if replica not in seen:
            seen.add(replica)
            roots.append(replica)
        if remote is not None and replica not in remotes:
            remotes[replica] = remote
    return roots, remotes


def looked_after(config: PoolConfig) -> tuple[list[str], dict[str, RemoteTarget]]:
    """``replica_roots`` and ``remote_replicas`` from one walk of the folders."""
    return _existing(config, remote_only=False)


def replica_roots(config: PoolConfig) -> list[str]:
    """``config.replicas``, then the existing replica of every database the entries match now; each once."""
    return looked_after(config)[0]


def remote_replicas(config: PoolConfig) -> dict[str, RemoteTarget]:
    """Every existing replica whose entry ships it off-host, and its target; the first entry wins.

    Walks only the folders of entries with a remote (the shipper's and ``status``'s question)."""
    return _existing(config, remote_only=True)[1]
