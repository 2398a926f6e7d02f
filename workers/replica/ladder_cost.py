"""What the ladder costs: bytes compaction wrote per byte replicate wrote, since the snapshot.

``status`` is a separate, read-only process, so the figures come from the files on
disk, not from the pool's memory (the pool counts every byte it writes in
``ltxpool_compaction_written_bytes_total``; that counter restarts with the pool).

Exactly:

* *snapshot*: the latest file from TXID 1 at any level (``latest_snapshot``), TXID S.
  Its size is ``snapshot_bytes``: the once-per-snapshot cost, not counted below.
* *window*: TXIDs from W on, where W is the first TXID after S still held by a
  level-0 file (retention removes level-0 files a few minutes after level 1 covers
  them, so a window from S + 1 would count ladder bytes whose level-0 bytes are gone).
* ``level0_bytes``: the sizes of the level-0 files that start at W or later;
  ``compaction_bytes``: the sizes of the level 1-3 files that start at W or later
  (every level 1-3 file starts where a level-0 file did, so both sums cover the same
  TXIDs); ``write_amplification`` = compaction_bytes / level0_bytes (None when no
  level-0 byte is in the window). Level 9 holds only snapshots, which start at TXID 1,
  so after S it adds nothing: this is "bytes written to levels 1-9 per byte written
  to level 0 since the last snapshot".

A replica in the layout before #14 has level 1-3 files from TXID 1, each a copy of
the database; they start at or before S, so the window leaves them out: their cost
shows in the per-level byte counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ltxpool.replica.layout import COMPACTION_LEVELS, Listing
from ltxpool.replica.plan import latest_snapshot

__all__ = ["LadderCost", "ladder_cost"]


@dataclass(frozen=True)
class LadderCost:
    """Bytes on disk since the latest snapshot; see the module docstring for the window."""

    #: The latest snapshot's max TXID and size (None, 0: the replica has none).
    snapshot_txid: int | None
    snapshot_bytes: int
    #: The first TXID of the window (None: no level-0 file after the snapshot).
    window_start: int | None
    level0_bytes: int
    compaction_bytes: int

    @property
    def write_amplification(self) -> float | None:
        return self.compaction_bytes / self.level0_bytes if self.level0_bytes else None


def ladder_cost(listings: Mapping[int, Listing]) -> LadderCost:
    """The ladder's cost in ``listings``: names and sizes only, no file is opened."""
    snapshot = latest_snapshot(listings)
    txid, size = (None, 0) if snapshot is None else (snapshot.max_txid, snapshot.size)
    level0 = [f for f in listings[0].files if f.min_txid > (txid or 0)]
    if not level0:
        return LadderCost(txid, size, None, 0, 0)
    start = min(f.min_txid for f in level0)
    ladder = sum(f.size for level in COMPACTION_LEVELS for f in listings[level].files if f.min_txid >= start)
    return LadderCost(txid, size, start, sum(f.size for f in level0), ladder)
