"""The off-host copy of each database, as ``ltxpool status --config --remote`` shows it (#16).

One listing of the database's prefix (names and sizes, no object read) against one
listing of its local replica: the objects and bytes the bucket holds, its newest
TXID, and how far it is behind the local replica -- in TXIDs, in files, and in
seconds since the oldest local file the bucket lacks became durable (its mtime: the
files are renamed into place only once fsynced). A prefix that cannot be listed is a
row with the error, never a failure of the whole status.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ltxpool.display import one_line
from ltxpool.errors import LtxpoolError
from ltxpool.remote import RemoteTarget, list_all, make_client
from ltxpool.replica.layout import Replica

__all__ = ["RemoteStatus", "remote_status"]


@dataclass
class RemoteStatus:
    url: str
    objects: int = 0
    bytes: int = 0
    newest_txid: int | None = None
    local_txid: int | None = None
    #: Local TXIDs past the bucket's newest.
    lag_txids: int | None = None
    #: Local files the bucket does not hold (yet).
    pending: int = 0
    #: Seconds since the oldest local file the bucket lacks became durable (0: it lacks none).
    lag_seconds: float | None = None
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return asdict(self)


def remote_status(replica: str, target: RemoteTarget, *, client: Any | None = None,
                  now: float | None = None) -> RemoteStatus:
    now = time.time() if now is None else now
    status = RemoteStatus(target.url)
    try:
        remote = {(f.level, f.min_txid, f.max_txid): f.size
                  for listing in list_all(client or make_client(target), target).values() for f in listing.files}
    except LtxpoolError as exc:
        status.error = one_line(str(exc))
        return status
    status.objects, status.bytes = len(remote), sum(remote.values())
    status.newest_txid = max((txids[2] for txids in remote), default=None)
    local = []
    for listing in Replica(replica).list_all().values():
        local.extend(listing.files)
        if listing.directory is not None:
            listing.directory.close()
    status.local_txid = max((f.max_txid for f in local), default=None)
    if status.local_txid is not None:
        status.lag_txids = max(status.local_txid - (status.newest_txid or 0), 0)
    missing = [f for f in local if remote.get((f.level, f.min_txid, f.max_txid)) != f.size]
    status.pending = len(missing)
    status.lag_seconds = max(now - min(f.mtime for f in missing), 0.0) if missing else 0.0
    return status
