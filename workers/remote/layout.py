"""Litestream 0.5's S3 layout, and the one place in this layer that knows it.

``<prefix>/<level:04x>/<min_txid:016x>-<max_txid:016x>.ltx``, e.g. ``db/0000/...``
(level 0) and ``db/0009/...`` (snapshots). Litestream 0.5.17 builds every key this
way: ``s3/replica_client.go`` OpenLTXFile and WriteLTXFile,
``key := c.Path + "/" + fmt.Sprintf("%04x/%s", level, filename)``, and lists a level
with the prefix ``client.Path + "/" + fmt.Sprintf("%04x/", level)`` (paginated
ListObjectsV2). The level directory is four *hex* digits, unlike the file replica's
decimal ``ltx/<level>/``.

Listing a level gives a :class:`~ltxpool.replica.layout.Listing` of
:class:`~ltxpool.replica.layout.LtxFile` entries whose ``path`` is
``s3://bucket/key`` and whose ``source`` reads the object (``ltxpool.remote.source``):
the replica layer's planner, chain checks and restore take them as they are. As in
Litestream, keys that do not parse are skipped and reported, never fatal.
``<prefix>/.ltxpool-lease`` (``ltxpool.remote.lease``) is no level's key.
"""

from __future__ import annotations

import functools
from typing import Any

from ltxpool.remote.retry import call
from ltxpool.remote.target import RemoteTarget
from ltxpool.replica.layout import LEVELS, Listing, LtxFile, LtxSource, format_name, parse_name

__all__ = ["LEASE_NAME", "level_prefix", "object_key", "parse_key", "list_level", "list_all"]

#: The lease object's name under the prefix (a dotfile: Litestream lists only level dirs).
LEASE_NAME = ".ltxpool-lease"


def level_prefix(target: RemoteTarget, level: int) -> str:
    return f"{target.prefix}/{level:04x}/"


def object_key(target: RemoteTarget, level: int, min_txid: int, max_txid: int) -> str:
    """The key Litestream 0.5.17 reads and writes for one LTX file."""
    return level_prefix(target, level) + format_name(min_txid, max_txid)


def parse_key(target: RemoteTarget, key: str) -> tuple[int, int, int] | None:
    """``(level, min TXID, max TXID)`` of an LTX object key under the target's prefix, else None."""
    head = target.prefix + "/"
    if not key.startswith(head):
        return None
    level_dir, _, name = key[len(head):].partition("/")
    if len(level_dir) != 4 or any(c not in "0123456789abcdef" for c in level_dir) or "/" in name:
        return None
    txids = parse_name(name)
    if txids is None:
        return None
    return int(level_dir, 16), *txids


def _pages(client: Any, target: RemoteTarget, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix``: ListObjectsV2 page by page, each page retried on its own."""
    objects: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        args: dict[str, Any] = {"Bucket": target.bucket, "Prefix": prefix}
        if token is not None:
            args["ContinuationToken"] = token
        page = call(target.display(prefix), "list objects", functools.partial(client.list_objects_v2, **args))
        objects.extend(page.get("Contents", ()))
        if not page.get("IsTruncated"):
            return objects
        token = page["NextContinuationToken"]


def list_level(client: Any, target: RemoteTarget, level: int, source: LtxSource | None = None) -> Listing:
    """The level's LTX objects by TXID (a level no object is in is an empty level).

    ``source``: what reads them (``RemoteSource``); None lists names and sizes only.
    """
    listing = Listing(level)
    for item in _pages(client, target, level_prefix(target, level)):
        key = str(item["Key"])
        parsed = parse_key(target, key)
        if parsed is None or parsed[0] != level:
            listing.skipped.append((target.display(key), "name is not <min>-<max>.ltx"))
            continue
        modified = item.get("LastModified")
        listing.files.append(LtxFile(
            level, parsed[1], parsed[2], target.display(key), int(item.get("Size", 0)),
            modified.timestamp() if modified is not None else 0.0, source=source,
        ))
    listing.files.sort()
    return listing


def list_all(client: Any, target: RemoteTarget, source: LtxSource | None = None) -> dict[int, Listing]:
    return {level: list_level(client, target, level, source) for level in LEVELS}
