"""Remote retention: the bucket follows the local rules, and never loses what a restore needs (#16).

``prune_remote`` plans retention on the bucket's own listings with the local
:class:`~ltxpool.replica.retention.RetentionPolicy` (``plan_retention``: a file goes
only when files that stay cover it, never the newest of a level, never one of the
bucket's current restore chain), and deletes of that plan only what ``keep`` does
not hold back -- the shipper keeps every object whose file the local replica still
has, so the bucket deletes only what local retention deleted first. Ages are the
objects' LastModified times (when they were shipped), so an object stays at least as
long in the bucket as its file did locally. Deletes ignore "already gone".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ltxpool.remote.layout import list_all, object_key
from ltxpool.remote.retry import call
from ltxpool.remote.target import RemoteTarget
from ltxpool.replica.layout import LtxFile
from ltxpool.replica.retention import RetentionPolicy, plan_retention

__all__ = ["prune_remote"]


def prune_remote(client: Any, target: RemoteTarget, policy: RetentionPolicy, now: float,
                 keep: Callable[[LtxFile], bool]) -> list[str]:
    """Delete the objects retention plans for the bucket that ``keep`` does not hold back; their keys."""
    listings = list_all(client, target)
    deleted = []
    for f in plan_retention(listings, policy, now):
        if keep(f):
            continue
        key = object_key(target, f.level, f.min_txid, f.max_txid)
        call(target.display(key), "retention delete",
             lambda key=key: client.delete_object(Bucket=target.bucket, Key=key))  # type: ignore[misc]
        deleted.append(key)
    return deleted
